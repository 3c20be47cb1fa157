# Data: every data set becomes results/data/<name>.npz (uint8 [N,28,28] + labels; lib.layout.data_file).
# Generated and bundled sets: prepare_dataset. Downloaded sets: fetch_real_dataset (local
# rule on the submit host, the only step that touches the network) then
# prepare_real_dataset (reads only data_dir; runs anywhere, no GPU).

import os

import lib.data.leaks as lib_leaks
import lib.data.registry as lib_datasets

REAL_SETS = [n for n in lib_datasets.DATASETS if lib_datasets.is_downloaded(n)]
GENERATED_SETS = [n for n in lib_datasets.DATASETS if not lib_datasets.is_downloaded(n)]
# Passed to the jobs through the shell command rather than params, so that switching
# offline on, moving data_dir or adding a mirror does not mark the converted sets (and
# every model trained on them) out of date: the files are checksum-verified either way.
DATA_DIR = shlex.quote(os.path.expanduser(config["data_dir"]))  # quoted, so the shell would not expand ~
OFFLINE_ARG = "--offline" if config["offline"] else ""
DATA_SOURCES_ARG = ("--sources-json " + shlex.quote(json.dumps(config["data_sources"], sort_keys=True))
                    if config["data_sources"] else "")


def real_conversion_args(wildcards):
    """What shapes the converted arrays besides the raw files: the OE subset size."""
    count = config["outlier_exposure"]["count"]
    if wildcards.dataset == OE_SOURCE and count is not None:
        return f"--train-count {count} --seed {config['seed']}"
    return ""


rule fetch_real_dataset:
    output:
        record=layout.fetched_record("{dataset}"),
    params:
        py=PY,
    log:
        layout.log_file("data/fetch_{dataset}"),
    wildcard_constraints:
        dataset="|".join(REAL_SETS),
    # Downloads retry per mirror inside lib.data.download; the log is shown when the step fails
    # so that an offline run's list of files to stage reaches the terminal.
    shell:
        "{params.py} -m lib.data.real fetch {wildcards.dataset} --data-dir {DATA_DIR} {OFFLINE_ARG} "
        "{DATA_SOURCES_ARG} --record {output.record:q} > {log:q} 2>&1 || {{ cat {log:q} >&2; exit 1; }}"


rule prepare_real_dataset:
    input:
        record=layout.fetched_record("{dataset}"),
    output:
        npz=layout.data_file("{dataset}"),
    params:
        py=PY,
        conversion=real_conversion_args,
        # Tracked so that a changed polarity re-converts; the job reads it from data_sources.
        polarity=lambda wc: config["data_sources"].get(wc.dataset, {}).get("polarity", "default"),
    log:
        layout.log_file("data/{dataset}"),
    benchmark:
        layout.benchmark_file("data/{dataset}")
    wildcard_constraints:
        dataset="|".join(REAL_SETS),
    shell:
        "{params.py} -m lib.data.real prepare {wildcards.dataset} --data-dir {DATA_DIR} {DATA_SOURCES_ARG} "
        "{params.conversion} --out {output.npz:q} > {log:q} 2>&1 || {{ cat {log:q} >&2; exit 1; }}"


rule leak_marks:
    output:
        json=layout.table_file("leaks.json"),
    params:
        # The sets, OE source and mixing folder that decide the marks: a change rewrites the file.
        decides=json.dumps({k: config[k] for k in ("ood_sets", "oe", "augment")} | {
            "oe_source": OE_SOURCE, "mixing": config["pixmix"]["mixing"]}, sort_keys=True),
    run:
        lib_leaks.write_leaks(config, output.json)


localrules:
    fetch_real_dataset,
    leak_marks,


rule prepare_dataset:
    output:
        npz=layout.data_file("{dataset}"),
    wildcard_constraints:
        dataset="|".join(GENERATED_SETS),
    params:
        py=PY,
        seed=config["seed"],
        size=lambda wc: config["outlier_exposure"]["size"] if wc.dataset == OE_SOURCE else config["synthetic_size"],
        id_arg=lambda wc: f"--id {layout.data_file(ID)}" if lib_datasets.DATASETS[wc.dataset]["needs_id"] else "",
    input:
        id_data=lambda wc: [layout.data_file(ID)] if lib_datasets.DATASETS[wc.dataset]["needs_id"] else [],
        extensions=lambda wc: extension_files("ood_sets", wc.dataset),
    log:
        layout.log_file("data/{dataset}"),
    benchmark:
        layout.benchmark_file("data/{dataset}")
    shell:
        "{params.py} -m lib.data.registry {wildcards.dataset:q} --out {output.npz:q} --seed {params.seed} "
        "--size {params.size} {params.id_arg} {EXTENSION_ARGS} > {log:q} 2>&1"


# Local (runs where Snakemake runs, not as a SLURM job): each set is seconds of numpy
# on the CPU, less than a SLURM job's queue wait and start-up; a job per set would also
# fill the queue with tiny jobs (six of them in the tiny preset alone).
localrules:
    prepare_dataset,
