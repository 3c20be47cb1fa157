# Evaluate: one job per model saves logits (and features) once per evaluation set;
# score and metrics then work from these files only.

EVAL_SETS = ["id_test", "id_val", *OOD_SETS]


rule evaluate:
    input:
        model=f"{MODEL_DIR}/model.pt",
        id_data=data_file(ID),
        ood=[data_file(name) for name in OOD_SETS],
        corrupted=[corruption_file(c) for c in CORRUPTIONS],
    output:
        logits=[f"{LOGIT_DIR}/{name}.npz" for name in EVAL_SETS],
        corrupted_logits=[f"{LOGIT_DIR}/mnistc_{c}.npz" for c in CORRUPTIONS],
        mahalanobis=f"{LOGIT_DIR}/mahalanobis_stats.npz",
    params:
        py=PY,
        cfg=eval_cfg_json(),
        # A flag, not the score list: only adding or removing ODIN re-evaluates the models.
        odin="--odin" if "odin" in SCORES else "",
        sets=" ".join("--set " + shlex.quote(f"{name}={data_file(name)}") for name in OOD_SETS)
        + "".join(" --logits-set " + shlex.quote(f"mnistc_{c}={corruption_file(c)}") for c in CORRUPTIONS),
        out_dir=LOGIT_DIR,
    log:
        "results/logs/evaluate/{augment}/{oe}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{augment}/{oe}/seed{seed}.tsv"
    shell:
        "{params.py} -m lib.evaluate.forward --model {input.model:q} --id-data {input.id_data:q} "
        "--config-json {params.cfg:q} --out-dir {params.out_dir:q} {params.sets} {params.odin} "
        "--threads {threads} > {log:q} 2>&1"


rule score:
    input:
        id_logits=f"{LOGIT_DIR}/id_test.npz",
        ood_logits=f"{LOGIT_DIR}/{{ood_set}}.npz",
        train_stats=lambda wc: [lib_detect.train_stats_file(LOGIT_DIR.format(augment=wc.augment, oe=wc.oe, seed=wc.seed))]
        if wc.score == "mahalanobis" else [],
    output:
        json="results/scores/{augment}/{oe}/seed{seed}/{ood_set}/{score}.json",
        # Per-example scores for the differences step, which resamples them (Mahalanobis
        # scores cost seconds per set: computed once, here).
        npz="results/scores/{augment}/{oe}/seed{seed}/{ood_set}/{score}.npz",
    log:
        "results/logs/score/{augment}/{oe}/seed{seed}/{ood_set}/{score}.log",
    run:
        # In-process: a score is a few milliseconds of numpy; a Python start per job would cost 100x more.
        lib_detect.score_job(input.id_logits, input.ood_logits, wildcards, output.json, log[0],
                             train_stats_path=input.train_stats[0] if input.train_stats else None,
                             out_npz=output.npz)


rule model_metrics:
    input:
        id_logits=f"{LOGIT_DIR}/id_test.npz",
    output:
        json="results/metrics/{augment}/{oe}/seed{seed}/accuracy.json",
    log:
        "results/logs/metrics/{augment}/{oe}/seed{seed}.log",
    run:
        lib_detect.accuracy_job(input.id_logits, wildcards, output.json, log[0])
