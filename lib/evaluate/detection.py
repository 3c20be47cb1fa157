"""OOD detection per model from cached logits: one score on one OOD set, and the score job.

These run inside Snakemake's process (`run:` rules), since each is milliseconds of
numpy; they are plain functions of paths and values, callable from Python too:

    from lib import layout
    from lib.evaluate.detection import detection_record, load_train_stats, score_job
    rec = detection_record(layout.logits_file("id_test", "none", "baseline", 1),
                           layout.logits_file("gaussian", "none", "baseline", 1), "msp")
    rec["auroc"], rec["fpr95"], rec["n_id"], rec["n_ood"]
    # mahalanobis, knn, vim and react also need the model's training-set statistics (saved by
    # lib.evaluate.forward; lib.evaluate.scores.SCORE_STATS says which arrays each reads)
    stats = load_train_stats(layout.mahalanobis_stats_file("none", "baseline", 1),
                             layout.posthoc_stats_file("none", "baseline", 1))
    detection_record(id_path, ood_path, "knn", stats)
    score_job(id_path, ood_path, "results/scores/none/baseline/seed1/gaussian/msp.json", "score.log",
              augment="none", oe="baseline", seed=1, ood_set="gaussian", score="msp",
              out_npz="results/scores/none/baseline/seed1/gaussian/msp.npz")
    id_scores, ood_scores = load_example_scores(layout.example_scores_file("gaussian", "msp", "none", "baseline", 1))
"""
import os

from lib.common import MissingCachedFileError, job_logger, load_npz, save_npz_atomic, write_json_atomic
from lib.evaluate.metrics import detection_metrics
from lib.evaluate.scores import compute_score


def load_train_stats(*paths):
    """The training-set statistics in `paths` (lib.evaluate.forward wrote them), in one dict:
    mahalanobis_stats.npz (class_means, precision) and posthoc_stats.npz (knn, vim, react)."""
    stats = {}
    for path in paths:
        if not os.path.exists(path):
            raise MissingCachedFileError(
                f"{path}: the training-set statistics of this model are missing; rerun its evaluate job, which "
                "fits them on the training split: the same snakemake command does (docs/failure-modes.md)")
        stats.update(load_npz(path))
    return stats


def example_scores(id_path, ood_path, score, train_stats=None):
    """Per-example scores (float64) of the ID test set and of one OOD set."""
    id_out, ood_out = load_npz(id_path, required=("logits",)), load_npz(ood_path, required=("logits",))
    return compute_score(score, id_out, train_stats), compute_score(score, ood_out, train_stats)


def detection_record(id_path, ood_path, score, train_stats=None):
    """AUROC, AUPR-in, AUPR-out, FPR95 (OOD = positive class) of one score on one set."""
    return {"score": score, **detection_metrics(*example_scores(id_path, ood_path, score, train_stats))}


def load_example_scores(path):
    """(id_scores, ood_scores) that a score job saved (score_job's out_npz), checked by load_npz."""
    saved = load_npz(path, required=("id_scores", "ood_scores"))
    return saved["id_scores"], saved["ood_scores"]


def score_job(id_path, ood_path, out_json, log_path, *, augment, oe, seed, ood_set, score, train_stats_paths=(),
              out_npz=None):
    """The per-(model, OOD set, score) rule: detection_record plus the model and set, written as JSON;
    with out_npz also the per-example scores (id_scores, ood_scores, float64), which the
    differences step resamples."""
    log = job_logger(log_path)
    train_stats = load_train_stats(*train_stats_paths) if train_stats_paths else None
    id_scores, ood_scores = example_scores(id_path, ood_path, score, train_stats)
    record = {"score": score, **detection_metrics(id_scores, ood_scores)}
    record.update(augment=augment, oe=oe, seed=int(seed), ood_set=ood_set, source=str(ood_path))
    if out_npz:
        save_npz_atomic(out_npz, id_scores=id_scores, ood_scores=ood_scores)
    write_json_atomic(out_json, record)
    log.info("%s", record)
