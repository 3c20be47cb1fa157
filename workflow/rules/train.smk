# Train: one GPU job per model of the grid, {augment} x {oe} x {seed}.


def train_inputs(wildcards):
    inputs = {"data": data_file(ID)}
    if wildcards.oe in ("oe", "oe_tune"):
        inputs["aux"] = data_file(OE_SOURCE)
    if wildcards.augment == "pixmix":
        inputs["mixing"] = "results/data/mixing.npz"
    if wildcards.oe == "oe_tune":
        # oe_tune fine-tunes the finished baseline model of the same augment and seed.
        inputs["init"] = f"results/models/{wildcards.augment}/baseline/seed{wildcards.seed}/model.pt"
    return inputs


def optional_args(inputs):
    return " ".join(f"--{k} {shlex.quote(str(inputs[k]))}" for k in ("aux", "mixing", "init") if k in inputs.keys())


rule train:
    input:
        unpack(train_inputs),
    output:
        model=f"{MODEL_DIR}/model.pt",
        train_log=f"{MODEL_DIR}/train_log.csv",
    params:
        py=PY,
        cfg=train_cfg_json,
        optional=lambda wc, input: optional_args(input),
        checkpoint="results/checkpoints/{augment}/{oe}/seed{seed}.pt",
    log:
        "results/logs/train/{augment}/{oe}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{augment}/{oe}/seed{seed}.tsv"
    shell:
        "{params.py} -m lib.train.loop --data {input.data:q} --augment {wildcards.augment} --oe {wildcards.oe} "
        "--seed {wildcards.seed} --config-json {params.cfg:q} {params.optional} "
        "--out-model {output.model:q} --out-log {output.train_log:q} --checkpoint {params.checkpoint:q} "
        "--threads {threads} > {log:q} 2>&1"
