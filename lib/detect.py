"""Per-model numbers from cached logits: OOD detection per (set, score), accuracy.

These run inside Snakemake's process (`run:` rules), since each is milliseconds of
numpy; they are plain functions, callable from Python too:

    from lib.detect import detection_record
    rec = detection_record("results/logits/none/baseline/seed1/id_test.npz",
                           "results/logits/none/baseline/seed1/gaussian.npz", "msp")
    rec["auroc"], rec["fpr95"], rec["n_id"], rec["n_ood"]
"""
import logging

import numpy as np

from lib.common import write_json_atomic
from lib.datasets import load_npz
from lib.metrics import accuracy, detection_metrics, nll
from lib.scores import compute_score


def detection_record(id_path, ood_path, score, train_stats=None):
    """AUROC, AUPR-in, AUPR-out, FPR95 (OOD = positive class) of one score on one set."""
    id_out, ood_out = load_npz(id_path), load_npz(ood_path)
    id_scores = compute_score(score, id_out, train_stats)
    ood_scores = compute_score(score, ood_out, train_stats)
    return {"score": score, **detection_metrics(id_scores, ood_scores)}


def _file_logger(log_path):
    logger = logging.getLogger(f"mnist_safety.job.{log_path}")
    logger.handlers[:] = [logging.FileHandler(log_path, mode="w")]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def score_job(id_path, ood_path, wildcards, out_json, log_path):
    log = _file_logger(log_path)
    record = detection_record(id_path, ood_path, wildcards.score)
    record.update(augment=wildcards.augment, oe=wildcards.oe, seed=int(wildcards.seed),
                  ood_set=wildcards.ood_set, source=str(ood_path))
    write_json_atomic(out_json, record)
    log.info("%s", record)


def accuracy_job(id_path, wildcards, out_json, log_path):
    log = _file_logger(log_path)
    out = load_npz(id_path)
    record = {"augment": wildcards.augment, "oe": wildcards.oe, "seed": int(wildcards.seed),
              "accuracy": accuracy(out["logits"], out["labels"]), "nll": nll(out["logits"], out["labels"]),
              "n": int(len(out["labels"])), "source": str(id_path)}
    write_json_atomic(out_json, record)
    log.info("%s", record)
