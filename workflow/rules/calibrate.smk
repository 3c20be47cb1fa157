# Calibration per model (before/after temperature scaling, ID test set and MNIST-C when it
# was evaluated), its tables, the differences between models with two-level bootstrap
# intervals and Holm-corrected p-values, and the ranks over data sets (Friedman, Nemenyi CD).

import os

import lib.evaluate.calibration as lib_calibration
import lib.evaluate.differences as lib_differences
import lib.evaluate.ranks as lib_ranks


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
        # The per-example files the two-level bootstrap resamples: each model's ID test and
        # MNIST-C logits, and its per-example scores of every OOD set and score.
        logits=[f for m in models() for f in model_logit_files(m["augment"], m["oe"], m["seed"], ["id_test", *mnistc_sets()])],
        scores=[f"results/scores/{m['augment']}/{m['oe']}/seed{m['seed']}/{o}/{s}.npz"
                for m in models() for o in OOD_SETS for s in SCORES],
    output:
        differences="results/tables/differences.csv",
        detectable="results/tables/detectable.csv",
    params:
        py=PY,
        seed=config["seed"],
        score=lib_differences.headline_score(SCORES),
    log:
        "results/logs/compare.log",
    benchmark:
        "results/benchmarks/compare.tsv"
    shell:
        "{params.py} -m lib.evaluate.differences --tables results/tables --logits results/logits "
        "--scores results/scores --headline-score {params.score} --seed {params.seed} "
        "--out {output.differences:q} --detectable-out {output.detectable:q} > {log:q} 2>&1"


rule ranks:
    input:
        detection="results/tables/detection.csv",
        calibration="results/tables/calibration.csv",
    output:
        ranks="results/tables/ranks.csv",
    params:
        score=lib_differences.headline_score(SCORES),
    log:
        "results/logs/ranks.log",
    run:
        # In-process: a Friedman test per comparison is milliseconds of pandas and scipy.
        lib_ranks.ranks_job(os.path.dirname(input.detection), params.score, output.ranks, log[0])


localrules:
    calibrate,
    aggregate_calibration,
    ranks,
