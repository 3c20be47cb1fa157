"""Calibration of one model from its cached logits, before and after temperature scaling.

    from lib.evaluate.calibration import calibration_job, calibration_record, mnistc_files
    rec = calibration_record("results/logits/none/baseline/seed1/id_test.npz",
                             "results/logits/none/baseline/seed1/id_val.npz",
                             mnistc_files("results/logits/none/baseline/seed1"))
    rec["temperature"]                                    # fitted on id_val (NLL)
    rec["sets"]["id_test"]["temperature_scaled"]["ece"]   # accuracy, nll, ece, rms, brier, n
    rec["sets"]["mnist_c"]["uncalibrated"]["ece"]         # mean over the corruptions
    rec["sets"]["mnist_c_pooled"]["uncalibrated"]["ece"]  # all corrupted images as one set
    calibration_job(id_test, id_val, {"fog": fog_npz}, "calibration.json", "calibrate.log",
                    augment="none", oe="baseline", seed=1)   # the record with the model, as JSON

The temperature T minimises the NLL on `id_val` (the held-out share of the training
split, fixed by the study seed; lib.data.splits.validation_split) and is never fitted on a test
set. Every metric comes twice: "uncalibrated" (T = 1) and "temperature_scaled". MNIST-C
sets are the evaluation sets named `mnistc_<corruption>` (lib.layout.mnistc_set), summarised twice:
- `mnist_c` ("mean over corruptions"): each metric computed per corruption, then averaged
  with every corruption weighted equally (as MNIST-C's mean accuracy is);
- `mnist_c_pooled` ("pooled"): each metric computed once on the images of all corruptions
  together. ECE differs most between the two: a model over-confident on some corruptions
  and under-confident on others has a large mean ECE, while in the pool the two can
  cancel. Its reliability bins are the pooled ones.
Without MNIST-C logits the record holds the ID test set alone.

Tables (long format, lib.evaluate.aggregate.COLUMNS):
    calibration_rows(json_paths)   metric in accuracy, nll, ece, rms, brier, n (and
                                   temperature, set id_val; n_corruptions, sets mnist_c
                                   and mnist_c_pooled)
    reliability_rows(json_paths)   one row per (bin, metric in count, mean_confidence,
                                   accuracy); extra columns bin, bin_low, bin_high
"""
import glob
import json
import os

import numpy as np
import pandas as pd
from scipy.special import softmax

from lib import layout
from lib.evaluate.aggregate import COLUMNS, long_table, write_csv_atomic
from lib.common import job_logger, load_npz, write_json_atomic
from lib.evaluate.metrics import calibration_metrics, fit_temperature, reliability_bins

CALIBRATION_METRICS = ("accuracy", "nll", "ece", "rms", "brier")
VARIANTS = ("uncalibrated", "temperature_scaled")
RELIABILITY_BINS = 15
RELIABILITY_COLUMNS = COLUMNS[:-1] + ["bin", "bin_low", "bin_high", "source"]


def mnistc_files(logit_dir):
    """{corruption: path} of the `mnistc_<corruption>.npz` files in one model's logit folder."""
    paths = sorted(glob.glob(layout.npz_in(logit_dir, layout.mnistc_set("*"))))
    return {layout.corruption_of(os.path.basename(p)[:-len(".npz")]): p for p in paths}


def _labelled(path):
    out = load_npz(path, required=("logits", "labels"))
    if (out["labels"] < 0).any():
        raise ValueError(f"{path}: calibration needs labelled images, but this set has unlabelled ones "
                         "(label -1); list only labelled sets as MNIST-C evaluation sets")
    return out["logits"], out["labels"]


def confidence_and_correct(logits, labels, temperature=1.0):
    """Max softmax of logits / T and whether the top-1 prediction is right (float 0/1)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    confidence = softmax(scaled, axis=1).max(axis=1)
    return confidence, (scaled.argmax(axis=1) == labels).astype(np.float64)


def _bins(confidence, correct):
    """Reliability bins as sums (count, confidence_sum, correct_sum): they pool by adding."""
    bins = reliability_bins(confidence, correct, RELIABILITY_BINS)
    count = bins["count"]
    return {"edges": bins["edges"].tolist(), "count": count.tolist(),
            "confidence_sum": np.nan_to_num(bins["mean_confidence"] * count).tolist(),
            "correct_sum": np.nan_to_num(bins["accuracy"] * count).tolist()}


def _set_metrics(logits, labels, temperature):
    return {variant: calibration_metrics(logits, labels, t)
            for variant, t in zip(VARIANTS, (1.0, temperature))}


def _set_bins(logits_labels, temperature):
    out = {}
    for variant, t in zip(VARIANTS, (1.0, temperature)):
        pairs = [confidence_and_correct(z, y, t) for z, y in logits_labels]
        out[variant] = _bins(np.concatenate([c for c, _ in pairs]), np.concatenate([k for _, k in pairs]))
    return out


def calibration_record(id_test_path, id_val_path, mnistc_paths=None):
    """Temperature (fitted on id_val) and calibration metrics per set, before and after.

    `mnistc_paths`: {corruption: logits npz} (may be empty). Returns a JSON-ready dict:
    temperature, n_val, sources, sets[set][variant][metric] with set in id_test,
    mnistc_<corruption>, mnist_c (mean over corruptions) and mnist_c_pooled (all corrupted
    images as one set; both present only with MNIST-C), and reliability[set][variant] =
    edges, count, confidence_sum, correct_sum for id_test and mnist_c_pooled.
    """
    val_logits, val_labels = _labelled(id_val_path)
    temperature = fit_temperature(val_logits, val_labels)
    test = _labelled(id_test_path)
    sets = {"id_test": _set_metrics(*test, temperature)}
    sources = {"id_test": str(id_test_path), "id_val": str(id_val_path)}
    reliability = {"id_test": _set_bins([test], temperature)}
    corrupted = {name: _labelled(path) for name, path in sorted((mnistc_paths or {}).items())}
    for name, (logits, labels) in corrupted.items():
        sets[layout.mnistc_set(name)] = _set_metrics(logits, labels, temperature)
        sources[layout.mnistc_set(name)] = str(mnistc_paths[name])
    if corrupted:
        names = [layout.mnistc_set(name) for name in corrupted]
        sets["mnist_c"] = {variant: {
            **{m: float(np.mean([sets[n][variant][m] for n in names])) for m in CALIBRATION_METRICS},
            "n": int(sum(sets[n][variant]["n"] for n in names)), "n_corruptions": len(names),
            "temperature": sets[names[0]][variant]["temperature"]} for variant in VARIANTS}
        pooled = (np.concatenate([z for z, _ in corrupted.values()]),
                  np.concatenate([y for _, y in corrupted.values()]))
        sets["mnist_c_pooled"] = _set_metrics(*pooled, temperature)
        for variant in VARIANTS:
            sets["mnist_c_pooled"][variant]["n_corruptions"] = len(names)
        sources["mnist_c"] = sources["mnist_c_pooled"] = ";".join(str(mnistc_paths[c]) for c in corrupted)
        reliability["mnist_c_pooled"] = _set_bins([pooled], temperature)
    return {"temperature": temperature, "n_val": int(val_labels.size), "sets": sets,
            "sources": sources, "reliability": reliability}


def calibration_job(id_test_path, id_val_path, mnistc_paths, out_json, log_path, *, augment, oe, seed):
    """The per-model rule: calibration_record plus the model's augment, oe and seed, written as JSON."""
    log = job_logger(log_path)
    record = calibration_record(id_test_path, id_val_path, mnistc_paths)
    record.update(augment=augment, oe=oe, seed=int(seed))
    write_json_atomic(out_json, record)
    log.info("T = %.4f fitted on %d validation images; sets %s", record["temperature"], record["n_val"],
             ", ".join(record["sets"]))
    for name, variants in record["sets"].items():
        log.info("%s: %s", name, {v: {m: round(x, 5) for m, x in variants[v].items()} for v in VARIANTS})


def _read_records(paths):
    for path in paths:
        with open(path) as f:
            yield str(path), json.load(f)


def calibration_rows(paths):
    """Long-format rows of the per-model calibration JSON files."""
    for path, rec in _read_records(paths):
        model = dict(augment=rec["augment"], oe=rec["oe"], seed=rec["seed"])
        yield dict(**model, metric="temperature", set="id_val", score="temperature_scaled",
                   value=rec["temperature"], source=path)
        yield dict(**model, metric="n", set="id_val", score="temperature_scaled", value=rec["n_val"], source=path)
        for set_name, variants in rec["sets"].items():
            for variant in VARIANTS:
                values = variants[variant]
                for metric in (*CALIBRATION_METRICS, "n", "n_corruptions"):
                    if metric in values:
                        yield dict(**model, metric=metric, set=set_name, score=variant,
                                   value=values[metric], source=path)


def reliability_rows(paths):
    """Rows of the reliability bins: per bin, its count, mean confidence and accuracy."""
    for path, rec in _read_records(paths):
        for set_name, variants in rec["reliability"].items():
            for variant, bins in variants.items():
                edges = bins["edges"]
                for b, count in enumerate(bins["count"]):
                    means = {"count": count,
                             "mean_confidence": bins["confidence_sum"][b] / count if count else np.nan,
                             "accuracy": bins["correct_sum"][b] / count if count else np.nan}
                    for metric, value in means.items():
                        yield dict(augment=rec["augment"], oe=rec["oe"], seed=rec["seed"], metric=metric,
                                   set=set_name, score=variant, value=value, bin=b, bin_low=edges[b],
                                   bin_high=edges[b + 1], source=path)


def reliability_table(rows):
    df = pd.DataFrame(list(rows), columns=RELIABILITY_COLUMNS)
    return df.sort_values(["set", "score", "augment", "oe", "seed", "bin", "metric"], kind="stable").reset_index(drop=True)


def aggregate_calibration_job(json_paths, calibration_csv, reliability_csv, log_path):
    log = job_logger(log_path)
    write_csv_atomic(long_table(calibration_rows(json_paths)), calibration_csv)
    write_csv_atomic(reliability_table(reliability_rows(json_paths)), reliability_csv)
    log.info("%d calibration records -> %s, %s", len(json_paths), calibration_csv, reliability_csv)
