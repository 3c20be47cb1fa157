# Evaluate: one job per model saves logits (and features) once per evaluation set;
# score and metrics then work from these files only.

import lib.evaluate.accuracy as lib_accuracy
import lib.evaluate.detection as lib_detection

EVAL_SETS = ["id_test", "id_val", *OOD_SETS]
MNISTC_SETS = [layout.mnistc_set(c) for c in CORRUPTIONS]  # the evaluation sets of MNIST-C


rule evaluate:
    input:
        model=layout.model_file(),
        id_data=layout.data_file(ID),
        ood=[layout.data_file(name) for name in OOD_SETS],
        corrupted=[layout.corruption_file(c) for c in CORRUPTIONS],
    output:
        logits=[layout.logits_file(name) for name in EVAL_SETS],
        corrupted_logits=[layout.logits_file(name) for name in MNISTC_SETS],
        mahalanobis=layout.mahalanobis_stats_file(),
    params:
        py=PY,
        cfg=eval_cfg_json(),
        # A flag, not the score list: only adding or removing ODIN re-evaluates the models.
        odin="--odin" if "odin" in SCORES else "",
        sets=" ".join("--set " + shlex.quote(f"{name}={layout.data_file(name)}") for name in OOD_SETS)
        + "".join(" --logits-set " + shlex.quote(f"{layout.mnistc_set(c)}={layout.corruption_file(c)}")
                  for c in CORRUPTIONS),
        out_dir=layout.logits_dir(),
    log:
        layout.log_file("evaluate/{augment}/{oe}/seed{seed}"),
    benchmark:
        layout.benchmark_file("evaluate/{augment}/{oe}/seed{seed}")
    shell:
        "{params.py} -m lib.evaluate.forward --model {input.model:q} --id-data {input.id_data:q} "
        "--config-json {params.cfg:q} --out-dir {params.out_dir:q} {params.sets} {params.odin} "
        "--threads {threads} > {log:q} 2>&1"


rule score:
    input:
        id_logits=layout.logits_file("id_test"),
        ood_logits=layout.logits_file("{ood_set}"),
        train_stats=lambda wc: [layout.mahalanobis_stats_file(wc.augment, wc.oe, wc.seed)]
        if wc.score == "mahalanobis" else [],
    output:
        json=layout.score_file(),
        # Per-example scores for the differences step, which resamples them (Mahalanobis
        # scores cost seconds per set: computed once, here).
        npz=layout.example_scores_file(),
    params:
        # full | oe_paper (seeded OOD draws): a change rescores every model
        scoring=dict(protocol=config["evaluation"], base_seed=config["seed"]),
    log:
        layout.log_file("score/{augment}/{oe}/seed{seed}/{ood_set}/{score}"),
    run:
        # In-process: a score is a few milliseconds of numpy; a Python start per job would cost 100x more.
        lib_detection.score_job(input.id_logits, input.ood_logits, output.json, log[0], **model_values(wildcards),
                                ood_set=wildcards.ood_set, score=wildcards.score, out_npz=output.npz,
                                train_stats_path=(input.train_stats or [None])[0], **params.scoring)


rule model_metrics:
    input:
        id_logits=layout.logits_file("id_test"),
    output:
        json=layout.metrics_file("accuracy"),
    log:
        layout.log_file("metrics/{augment}/{oe}/seed{seed}"),
    run:
        lib_accuracy.accuracy_job(input.id_logits, output.json, log[0], **model_values(wildcards))
