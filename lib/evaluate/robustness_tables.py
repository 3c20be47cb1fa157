"""MNIST-C numbers from cached logits: accuracy per corruption per model, and the robustness tables.

    from lib.evaluate.robustness_tables import corruption_accuracies, robustness_long, robustness_summary_long
    acc = corruption_accuracies({"fog": "results/logits/none/baseline/seed1/mnistc_fog.npz", ...})
    records = [json.load(open(p)) | {"path": p} for p in record_paths]
    robustness_long(records)           # one accuracy row per (model, seed, corruption)
    robustness_summary_long(records)   # mean_accuracy, non_overlap_mean, mce per (model, seed)
    robustness_job({"fog": fog_npz, ...}, "robustness.json", "robustness.log", augment="none", oe="baseline", seed=1)
    robustness_tables_job(record_paths, "robustness.csv", "robustness_summary.csv", "tables.log")

The workflow calls robustness_job once per model (a `run:` rule: milliseconds of numpy)
and robustness_tables_job once. Both tables use lib.evaluate.aggregate's long format (augment,
oe, seed, metric, set, score, value, source): robustness.csv has metric "accuracy" and
set = the corruption; robustness_summary.csv has metrics mean_accuracy, non_overlap_mean
(without the corruptions the model's augmentation overlaps, lib.evaluate.robustness.OVERLAP) and
mce (against none/baseline of the same seed; left out where that model is not in the
grid), set "mnist_c".
"""
import json
import math

import pandas as pd

from lib import layout
from lib.evaluate.aggregate import COLUMNS, long_table, write_csv_atomic
from lib.common import load_npz, write_json_atomic
from lib.evaluate.metrics import accuracy
from lib.evaluate.robustness import BASELINE_MODEL, robustness_rows

SUMMARY_SET = "mnist_c"
SUMMARY_METRICS = ("mean_accuracy", "non_overlap_mean", "mce")


def corruption_accuracies(logit_paths):
    """{corruption: (top-1 accuracy, image count)} from {corruption: logits npz with labels}."""
    result = {}
    for corruption, path in logit_paths.items():
        out = load_npz(path, required=("logits", "labels"))
        if (out["labels"] < 0).any():
            raise ValueError(f"{path}: MNIST-C set {corruption!r} has unlabelled images (label -1); "
                             f"rebuild {layout.corruption_file(corruption)}")
        result[corruption] = (accuracy(out["logits"], out["labels"]), int(len(out["labels"])))
    return result


def robustness_job(logit_paths, out_json, log_path, *, augment, oe, seed):
    """Write one model's record: augment, oe, seed and per corruption accuracy, n, source."""
    accuracies = corruption_accuracies(logit_paths)
    record = {"augment": augment, "oe": oe, "seed": int(seed),
              "corruptions": {c: {"accuracy": acc, "n": n, "source": str(logit_paths[c])}
                              for c, (acc, n) in accuracies.items()}}
    write_json_atomic(out_json, record)
    with open(log_path, "w") as log:
        for c, (acc, n) in accuracies.items():
            log.write(f"{c}: accuracy {acc:.4f} on {n} images\n")


def read_records(paths):
    """The per-model records, each with its own path under "path"."""
    records = []
    for path in paths:
        with open(path) as f:
            records.append({**json.load(f), "path": str(path)})
    return records


def robustness_long(records):
    """robustness.csv: one row per (augment, oe, seed, corruption), metric accuracy."""
    rows = (dict(augment=r["augment"], oe=r["oe"], seed=r["seed"], metric="accuracy", set=c, score="",
                 value=cell["accuracy"], source=r["path"])
            for r in records for c, cell in r["corruptions"].items())
    return long_table(rows)


def robustness_summary_long(records, baseline_model=BASELINE_MODEL):
    """robustness_summary.csv: mean_accuracy, non_overlap_mean, mce per (augment, oe, seed).

    mce rows name both records in `source` (model;baseline); they are left out where the
    seed has no baseline model or the baseline makes no error on any corruption.
    """
    if not records:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.DataFrame([{"model": f"{r['augment']}/{r['oe']}", "seed": r["seed"], "corruption": c,
                           "accuracy": cell["accuracy"]}
                          for r in records for c, cell in r["corruptions"].items()])
    per_model = robustness_rows(table, baseline_model)
    path_of = {(f"{r['augment']}/{r['oe']}", r["seed"]): r["path"] for r in records}
    rows = []
    for row in per_model.itertuples(index=False):
        augment, oe = row.model.split("/", 1)
        source = path_of[(row.model, row.seed)]
        for metric in SUMMARY_METRICS:
            value = float(getattr(row, metric))
            if math.isnan(value):
                continue
            row_source = source
            if metric == "mce":
                row_source = f"{source};{path_of[(baseline_model, row.seed)]}"
            rows.append(dict(augment=augment, oe=oe, seed=row.seed, metric=metric, set=SUMMARY_SET,
                             score="", value=value, source=row_source))
    return long_table(rows)


def robustness_tables_job(record_paths, out_long, out_summary, log_path):
    records = read_records(record_paths)
    long = robustness_long(records)
    summary = robustness_summary_long(records)
    write_csv_atomic(long, out_long)
    write_csv_atomic(summary, out_summary)
    with open(log_path, "w") as log:
        log.write(f"{len(records)} models: {len(long)} rows in {out_long}, {len(summary)} in {out_summary}\n")
