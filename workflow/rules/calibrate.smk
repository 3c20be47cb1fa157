# Calibration per model (before/after temperature scaling, ID test set and MNIST-C when it
# was evaluated), its tables, and every model's difference to none/baseline with intervals.

import os

import lib.evaluate.calibration as lib_calibration


def mnistc_sets():
    """Evaluation sets named mnistc_<corruption> (MNIST-C), evaluated by the evaluate job."""
    return [lib_calibration.MNISTC_PREFIX + c for c in CORRUPTIONS]


def model_logit_files(augment, oe, seed, names):
    folder = LOGIT_DIR.format(augment=augment, oe=oe, seed=seed)
    return [f"{folder}/{name}.npz" for name in names]


rule calibrate:
    input:
        id_test=f"{LOGIT_DIR}/id_test.npz",
        id_val=f"{LOGIT_DIR}/id_val.npz",
        mnistc=lambda wc: model_logit_files(wc.augment, wc.oe, wc.seed, mnistc_sets()),
    output:
        json="results/metrics/{augment}/{oe}/seed{seed}/calibration.json",
    log:
        "results/logs/calibrate/{augment}/{oe}/seed{seed}.log",
    run:
        prefix = lib_calibration.MNISTC_PREFIX
        mnistc = {os.path.basename(p)[len(prefix):-len(".npz")]: p for p in input.mnistc}
        lib_calibration.calibration_job(input.id_test, input.id_val, mnistc, wildcards, output.json, log[0])


rule aggregate_calibration:
    input:
        expand_models("results/metrics/{augment}/{oe}/seed{seed}/calibration.json"),
    output:
        calibration="results/tables/calibration.csv",
        reliability="results/tables/reliability.csv",
    log:
        "results/logs/aggregate_calibration.log",
    run:
        lib_calibration.aggregate_calibration_job(list(input), output.calibration, output.reliability, log[0])


rule compare:
    input:
        accuracy="results/tables/accuracy.csv",
        detection="results/tables/detection.csv",
        calibration="results/tables/calibration.csv",
        # Per-example arrays: the bootstrap over test examples reads them when there is one seed.
        logits=[f for m in models() for f in model_logit_files(m["augment"], m["oe"], m["seed"], EVAL_SETS + mnistc_sets())],
        train_stats=expand_models(f"{LOGIT_DIR}/mahalanobis_stats.npz"),
    output:
        differences="results/tables/differences.csv",
    params:
        py=PY,
        seed=config["seed"],
    log:
        "results/logs/compare.log",
    benchmark:
        "results/benchmarks/compare.tsv"
    shell:
        "{params.py} -m lib.evaluate.differences --tables results/tables --logits results/logits --seed {params.seed} "
        "--out {output.differences:q} > {log:q} 2>&1"


localrules:
    calibrate,
    aggregate_calibration,
