"""OOD detection per model from cached logits: one score on one OOD set, and the score job.

These run inside Snakemake's process (`run:` rules), since each is milliseconds of
numpy; they are plain functions of paths and values, callable from Python too:

    from lib import layout
    from lib.evaluate.detection import detection_record, load_train_stats, score_job
    rec = detection_record(layout.logits_file("id_test", "none", "baseline", 1),
                           layout.logits_file("gaussian", "none", "baseline", 1), "msp")
    rec["auroc"], rec["fpr95"], rec["n_id"], rec["n_ood"]
    # mahalanobis also needs the model's training-feature statistics (saved by lib.evaluate.forward)
    stats = load_train_stats(layout.mahalanobis_stats_file("none", "baseline", 1))
    detection_record(id_path, ood_path, "mahalanobis", stats)
    score_job(id_path, ood_path, "results/scores/none/baseline/seed1/gaussian/msp.json", "score.log",
              augment="none", oe="baseline", seed=1, ood_set="gaussian", score="msp")
"""
import os

from lib.common import MissingCachedFileError, job_logger, load_npz, write_json_atomic
from lib.evaluate.metrics import detection_metrics
from lib.evaluate.scores import compute_score


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


def score_job(id_path, ood_path, out_json, log_path, *, augment, oe, seed, ood_set, score, train_stats_path=None):
    """The per-(model, OOD set, score) rule: detection_record plus the model and set, written as JSON."""
    log = job_logger(log_path)
    train_stats = load_train_stats(train_stats_path) if train_stats_path else None
    record = detection_record(id_path, ood_path, score, train_stats)
    record.update(augment=augment, oe=oe, seed=int(seed), ood_set=ood_set, source=str(ood_path))
    write_json_atomic(out_json, record)
    log.info("%s", record)
