# Calibration per model (before/after temperature scaling, ID test set and MNIST-C when it
# was evaluated), its tables, and every model's difference to none/baseline with intervals.

import os

import lib.evaluate.calibration as lib_calibration


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
        # Per-example arrays: the bootstrap over test examples reads them when there is one seed.
        logits=[layout.logits_file(name, **m) for m in models() for name in EVAL_SETS + MNISTC_SETS],
        train_stats=expand_models(layout.mahalanobis_stats_file()),
    output:
        differences=layout.table_file("differences.csv"),
    params:
        py=PY,
        seed=config["seed"],
        # lib.evaluate.differences finds the logits beside the tables folder (lib.layout).
        tables=lambda wc, input: os.path.dirname(input.accuracy),
    log:
        layout.log_file("compare"),
    benchmark:
        layout.benchmark_file("compare")
    shell:
        "{params.py} -m lib.evaluate.differences --tables {params.tables:q} --seed {params.seed} "
        "--out {output.differences:q} > {log:q} 2>&1"


localrules:
    calibrate,
    aggregate_calibration,
