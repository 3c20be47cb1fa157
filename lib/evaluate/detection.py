"""Per-model numbers from cached logits: OOD detection per (set, score), accuracy.

These run inside Snakemake's process (`run:` rules), since each is milliseconds of
numpy; they are plain functions, callable from Python too:

    from lib.evaluate.detection import detection_record
    rec = detection_record("results/logits/none/baseline/seed1/id_test.npz",
                           "results/logits/none/baseline/seed1/gaussian.npz", "msp")
    rec["auroc"], rec["fpr95"], rec["n_id"], rec["n_ood"]
    # mahalanobis also needs the model's training-feature statistics (saved by lib.evaluate.forward)
    stats = load_train_stats(train_stats_file("results/logits/none/baseline/seed1"))
    detection_record(id_path, ood_path, "mahalanobis", stats)
"""
import os

from lib.common import MissingCachedFileError, job_logger, load_npz, write_json_atomic
from lib.evaluate.metrics import accuracy, detection_metrics, nll
from lib.evaluate.scores import compute_score

MAHALANOBIS_STATS = "mahalanobis_stats.npz"  # written by lib.evaluate.forward beside the logits


def train_stats_file(logit_dir):
    return os.path.join(logit_dir, MAHALANOBIS_STATS)


def load_train_stats(path):
    """class_means and precision of one model's training features (lib.evaluate.forward wrote them)."""
    if not os.path.exists(path):
        raise MissingCachedFileError(
            f"{path}: the Mahalanobis statistics of this model are missing; rerun its evaluate job, which "
            "fits them on the training split: the same snakemake command does (docs/failure-modes.md)")
    return load_npz(path, required=("class_means", "precision"))


def detection_record(id_path, ood_path, score, train_stats=None):
    """AUROC, AUPR-in, AUPR-out, FPR95 (OOD = positive class) of one score on one set."""
    id_out, ood_out = load_npz(id_path, required=("logits",)), load_npz(ood_path, required=("logits",))
    id_scores = compute_score(score, id_out, train_stats)
    ood_scores = compute_score(score, ood_out, train_stats)
    return {"score": score, **detection_metrics(id_scores, ood_scores)}


def score_job(id_path, ood_path, wildcards, out_json, log_path, train_stats_path=None):
    log = job_logger(log_path)
    train_stats = load_train_stats(train_stats_path) if train_stats_path else None
    record = detection_record(id_path, ood_path, wildcards.score, train_stats)
    record.update(augment=wildcards.augment, oe=wildcards.oe, seed=int(wildcards.seed),
                  ood_set=wildcards.ood_set, source=str(ood_path))
    write_json_atomic(out_json, record)
    log.info("%s", record)


def accuracy_job(id_path, wildcards, out_json, log_path):
    log = job_logger(log_path)
    out = load_npz(id_path, required=("logits", "labels"))
    record = {"augment": wildcards.augment, "oe": wildcards.oe, "seed": int(wildcards.seed),
              "accuracy": accuracy(out["logits"], out["labels"]), "nll": nll(out["logits"], out["labels"]),
              "n": int(len(out["labels"])), "source": str(id_path)}
    write_json_atomic(out_json, record)
    log.info("%s", record)
