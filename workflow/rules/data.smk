# Data: every data set becomes results/data/<name>.npz (uint8 [N,28,28] + labels).


rule prepare_dataset:
    output:
        npz="results/data/{dataset}.npz",
    params:
        py=PY,
        seed=config["seed"],
        size=lambda wc: config["outlier_exposure"]["size"] if wc.dataset == OE_SOURCE else config["synthetic_size"],
        id_arg=lambda wc: f"--id {data_file(ID)}" if lib_datasets.DATASETS[wc.dataset]["needs_id"] else "",
    input:
        id_data=lambda wc: [data_file(ID)] if lib_datasets.DATASETS[wc.dataset]["needs_id"] else [],
    log:
        "results/logs/data/{dataset}.log",
    benchmark:
        "results/benchmarks/data/{dataset}.tsv"
    shell:
        "{params.py} -m lib.datasets {wildcards.dataset:q} --out {output.npz:q} --seed {params.seed} "
        "--size {params.size} {params.id_arg} > {log:q} 2>&1"


# Local (runs where Snakemake runs, not as a SLURM job): each set is seconds of numpy
# on the CPU, less than a SLURM job's queue wait and start-up; a job per set would also
# fill the queue with tiny jobs (six of them in the tiny preset alone).
localrules:
    prepare_dataset,
