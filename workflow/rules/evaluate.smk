# Evaluate: one job per model saves logits (and features) once per evaluation set;
# score and metrics then work from these files only.

from lib.evaluate.scores import SCORE_STATS

lib_accuracy = lazy_module("lib.evaluate.accuracy")  # run: jobs only (common.smk)
lib_detection = lazy_module("lib.evaluate.detection")
lib_full_spectrum = lazy_module("lib.evaluate.full_spectrum")

# id_shifted: the ID test images under MNIST-C corruptions (full-spectrum detection), with
# features and ODIN logits like an OOD set, so that every score can be computed on it.
EVAL_SETS = ["id_test", "id_val", layout.SHIFTED_SET, *OOD_SETS]
MNISTC_SETS = [layout.mnistc_set(c) for c in CORRUPTIONS]  # the evaluation sets of MNIST-C
FULL_SPECTRUM_PAIRS = [(o, s) for o in OOD_SETS for s in SCORES]  # (OOD set, score) of the full-spectrum job


rule evaluate:
    input:
        model=layout.model_file(),
        id_data=layout.data_file(ID),
        ood=[layout.data_file(name) for name in OOD_SETS],
        corrupted=[layout.corruption_file(c) for c in CORRUPTIONS],
        shifted=layout.shifted_file(),
        extensions=extension_files("train.model", config["train"]["model"]),  # builds the model by name
        validation_ood=[layout.data_file(name) for name in VALIDATION_OOD_SETS],
    output:
        logits=[layout.logits_file(name) for name in EVAL_SETS],
        corrupted_logits=[layout.logits_file(name) for name in MNISTC_SETS],
        mahalanobis=layout.mahalanobis_stats_file(),
        posthoc=layout.posthoc_stats_file(),
        hyperparameters=layout.hyperparameters_file(),
    params:
        py=PY,
        cfg=eval_cfg_json(),
        # A flag, not the score list: only adding or removing ODIN re-evaluates the models.
        odin="--odin" if "odin" in SCORES else "",
        sets=" ".join("--set " + shlex.quote(f"{name}={layout.data_file(name)}") for name in OOD_SETS)
        + " --set " + shlex.quote(f"{layout.SHIFTED_SET}={layout.shifted_file()}")
        + "".join(" --logits-set " + shlex.quote(f"{layout.mnistc_set(c)}={layout.corruption_file(c)}")
                  for c in CORRUPTIONS),
        # The score hyperparameters are tuned on these (lib.evaluate.tuning), never on the test sets.
        validation="".join(" --validation-set " + shlex.quote(f"{name}={layout.data_file(name)}")
                           for name in VALIDATION_OOD_SETS),
        out_dir=layout.logits_dir(),
    log:
        layout.log_file("evaluate/{augment}/{oe}/seed{seed}"),
    benchmark:
        layout.benchmark_file("evaluate/{augment}/{oe}/seed{seed}")
    shell:
        "{params.py} -m lib.evaluate.forward --model {input.model:q} --id-data {input.id_data:q} "
        "--config-json {params.cfg:q} --out-dir {params.out_dir:q} {params.sets} {params.odin}{params.validation} "
        "--threads {threads} {EXTENSION_ARGS} > {log:q} 2>&1"


rule score:
    input:
        id_logits=layout.logits_file("id_test"),
        ood_logits=layout.logits_file("{ood_set}"),
        # The training-set statistics of the scores that read them (SCORE_STATS): Mahalanobis'
        # and knn's, vim's and react's, both written by the model's evaluate job.
        train_stats=lambda wc: [layout.mahalanobis_stats_file(wc.augment, wc.oe, wc.seed),
                                layout.posthoc_stats_file(wc.augment, wc.oe, wc.seed)]
        if wc.score in SCORE_STATS else [],
        extensions=lambda wc: extension_files("scores", wc.score),
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
                                train_stats_paths=list(input.train_stats), **params.scoring)


rule full_spectrum:
    # One job per model: the shifted set's scores, then every (OOD set, score) from the score
    # jobs' per-example scores (lib.evaluate.full_spectrum).
    input:
        shifted=layout.logits_file(layout.SHIFTED_SET),
        train_stats=[layout.mahalanobis_stats_file(), layout.posthoc_stats_file()],  # SCORE_STATS' files
        example_scores=[layout.example_scores_file(o, s) for o, s in FULL_SPECTRUM_PAIRS],
    output:
        json=layout.metrics_file("full_spectrum"),
    params:
        example_scores=lambda wildcards, input: dict(zip(FULL_SPECTRUM_PAIRS, input.example_scores)),
    log:
        layout.log_file("full_spectrum/{augment}/{oe}/seed{seed}"),
    run:
        # In-process: numpy scores of one set and sklearn metrics, no model.
        lib_full_spectrum.full_spectrum_job(input.shifted, list(input.train_stats), params.example_scores,
                                            output.json, log[0], **model_values(wildcards))


rule model_metrics:
    input:
        id_logits=layout.logits_file("id_test"),
    output:
        json=layout.metrics_file("accuracy"),
    log:
        layout.log_file("metrics/{augment}/{oe}/seed{seed}"),
    run:
        lib_accuracy.accuracy_job(input.id_logits, output.json, log[0], **model_values(wildcards))
