"""Collect per-job JSON records into long-format CSV tables and summarise over seeds.

Long format, one row per number: augment, oe, seed, metric, set, score, value, source
(the file the number came from), so any cell of the report traces back to a file.

    from lib.evaluate.aggregate import summarize
    df = pandas.read_csv("results/tables/detection.csv")
    summarize(df)   # mean, std (ddof=1), n over seeds per (augment, oe, metric, set, score)
    aggregate_job(score_jsons, accuracy_jsons, "results/tables/detection.csv",
                  "results/tables/accuracy.csv", "aggregate.log")   # the workflow's aggregate rule
"""
import json

import pandas as pd

from lib.common import job_logger, replace_atomic

COLUMNS = ["augment", "oe", "seed", "metric", "set", "score", "value", "source"]
DETECTION_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_nearest", "n_id", "n_ood")
# Under the oe_paper protocol (lib.evaluate.detection) a record also has the std over its OOD draws.
DRAW_STD_METRICS = ("auroc_draw_std", "aupr_in_draw_std", "aupr_out_draw_std", "fpr95_draw_std",
                    "fpr95_nearest_draw_std")


def _read(paths):
    for path in paths:
        with open(path) as f:
            yield path, json.load(f)


def detection_rows(paths):
    for path, rec in _read(paths):
        for metric in DETECTION_METRICS + tuple(m for m in DRAW_STD_METRICS if m in rec):
            yield dict(augment=rec["augment"], oe=rec["oe"], seed=rec["seed"], metric=metric,
                       set=rec["ood_set"], score=rec["score"], value=rec[metric], source=path)


def accuracy_rows(paths, metrics=("accuracy", "nll")):
    for path, rec in _read(paths):
        for metric in metrics:
            yield dict(augment=rec["augment"], oe=rec["oe"], seed=rec["seed"], metric=metric,
                       set=rec.get("set", "id_test"), score="", value=rec[metric], source=path)


def write_csv_atomic(df, path):
    replace_atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def long_table(rows):
    df = pd.DataFrame(list(rows), columns=COLUMNS)
    return df.sort_values(["metric", "set", "score", "augment", "oe", "seed"], kind="stable").reset_index(drop=True)


def summarize(df):
    """mean, std (sample, ddof=1; NaN with one seed) and n over seeds."""
    keys = ["augment", "oe", "metric", "set", "score"]
    grouped = df.fillna({"score": ""}).groupby(keys, sort=False)["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def aggregate_job(score_paths, accuracy_paths, detection_csv, accuracy_csv, log_path):
    """detection.csv from the score records, accuracy.csv from the accuracy records."""
    # Runs inside Snakemake's process: log to this job's file only, never the root logger.
    log = job_logger(log_path)
    detection = long_table(detection_rows(score_paths))
    accuracy = long_table(accuracy_rows(accuracy_paths))
    write_csv_atomic(detection, detection_csv)
    write_csv_atomic(accuracy, accuracy_csv)
    log.info("%s: %d rows; %s: %d rows", detection_csv, len(detection), accuracy_csv, len(accuracy))
