# Train: one GPU job per model of the grid, {augment} x {oe} x {seed}; external checkpoints
# (config external_models) are imported instead.


def train_inputs(wildcards):
    inputs = {"data": layout.data_file(ID)}
    if wildcards.oe in ("oe", "oe_tune"):
        inputs["aux"] = layout.data_file(OE_SOURCE)
    if wildcards.augment == "pixmix":
        inputs["mixing"] = layout.mixing_file()
    if wildcards.oe == "oe_tune":
        # oe_tune fine-tunes the finished baseline model of the same augment and seed.
        inputs["init"] = layout.model_file(wildcards.augment, "baseline", wildcards.seed)
    return inputs


def optional_args(inputs):
    return " ".join(f"--{k} {shlex.quote(str(inputs[k]))}" for k in ("aux", "mixing", "init") if k in inputs.keys())


rule train:
    wildcard_constraints:
        augment="|".join(AUGMENTS),  # not "external": those come from import_external
        oe="|".join(OES),
    input:
        unpack(train_inputs),
    output:
        model=layout.model_file(),
        train_log=layout.train_log_file(),
    params:
        py=PY,
        cfg=train_cfg_json,
        optional=lambda wc, input: optional_args(input),
        checkpoint=layout.checkpoint_file(),
    log:
        layout.log_file("train/{augment}/{oe}/seed{seed}"),
    benchmark:
        layout.benchmark_file("train/{augment}/{oe}/seed{seed}")
    shell:
        "{params.py} -m lib.train.loop --data {input.data:q} --augment {wildcards.augment} --oe {wildcards.oe} "
        "--seed {wildcards.seed} --config-json {params.cfg:q} {params.optional} "
        "--out-model {output.model:q} --out-log {output.train_log:q} --checkpoint {params.checkpoint:q} "
        "--threads {threads} > {log:q} 2>&1"


if EXTERNALS:

    rule import_external:
        # An external checkpoint (config external_models) as this project's model file; the
        # download, if any, happened in the config check before any job.
        output:
            model=layout.model_file(EXTERNAL_AUGMENT, "{name}", EXTERNAL_SEED),
        wildcard_constraints:
            name="|".join(EXTERNALS),
        params:
            entry=lambda wc: json.dumps(EXTERNALS[wc.name], sort_keys=True),  # a new sha256 or file re-imports it
        log:
            layout.log_file("import_external/{name}"),
        run:
            import lib.train.external as lib_external

            lib_external.import_job(wildcards.name, EXTERNALS[wildcards.name], config["data_dir"],
                                    config.get("offline", False), output.model, log[0])


    localrules:
        import_external,
