# Calibration per model (before/after temperature scaling, ID test set and MNIST-C when it
# was evaluated), its tables, the differences between models with two-level bootstrap
# intervals and Holm-corrected p-values, and the ranks over data sets (Friedman, Nemenyi CD).

import os

from lib.evaluate.scores import headline_score

lib_calibration = lazy_module("lib.evaluate.calibration")  # run: jobs only (common.smk)
lib_ranks = lazy_module("lib.evaluate.ranks")


rule calibrate:
    input:
        id_test=layout.logits_file("id_test"),
        id_val=layout.logits_file("id_val"),
        mnistc=[layout.logits_file(name) for name in MNISTC_SETS],
    output:
        json=layout.metrics_file("calibration"),
    log:
        layout.log_file("calibrate/{augment}/{oe}/seed{seed}"),
    run:
        lib_calibration.calibration_job(input.id_test, input.id_val, dict(zip(CORRUPTIONS, input.mnistc)),
                                        output.json, log[0], **model_values(wildcards))


rule aggregate_calibration:
    input:
        expand_models(layout.metrics_file("calibration")),
    output:
        calibration=layout.table_file("calibration.csv"),
        reliability=layout.table_file("reliability.csv"),
    log:
        layout.log_file("aggregate_calibration"),
    run:
        lib_calibration.aggregate_calibration_job(list(input), output.calibration, output.reliability, log[0])


rule compare:
    input:
        accuracy=layout.table_file("accuracy.csv"),
        detection=layout.table_file("detection.csv"),
        calibration=layout.table_file("calibration.csv"),
        # The per-example files the two-level bootstrap resamples: each model's ID test and
        # MNIST-C logits, and its per-example scores of every OOD set and score.
        logits=[layout.logits_file(name, **m) for m in models() for name in ["id_test", *MNISTC_SETS]],
        scores=[layout.example_scores_file(o, s, **m) for m in models() for o in OOD_SETS for s in SCORES],
    output:
        differences=layout.table_file("differences.csv"),
        detectable=layout.table_file("detectable.csv"),
    params:
        py=PY,
        seed=config["seed"],
        score=headline_score(SCORES),
        # lib.evaluate.differences finds the logits and scores beside the tables folder (lib.layout).
        tables=lambda wc, input: os.path.dirname(input.accuracy),
    log:
        layout.log_file("compare"),
    benchmark:
        layout.benchmark_file("compare")
    shell:
        "{params.py} -m lib.evaluate.differences --tables {params.tables:q} --headline-score {params.score} "
        "--seed {params.seed} --out {output.differences:q} --detectable-out {output.detectable:q} > {log:q} 2>&1"


rule ranks:
    input:
        detection=layout.table_file("detection.csv"),
        calibration=layout.table_file("calibration.csv"),
        full_spectrum=layout.table_file("full_spectrum.csv"),
    output:
        ranks=layout.table_file("ranks.csv"),
    params:
        score=headline_score(SCORES),
        groups=OOD_GROUPS,
    log:
        layout.log_file("ranks"),
    run:
        # In-process: a Friedman test per comparison is milliseconds of pandas and scipy.
        lib_ranks.ranks_job(input.detection, input.calibration, params.score, output.ranks, log[0], params.groups,
                            full_spectrum_csv=input.full_spectrum)


localrules:
    calibrate,
    aggregate_calibration,
    ranks,
