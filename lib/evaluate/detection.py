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
    id_scores, ood_scores = load_example_scores("results/scores/none/baseline/seed1/gaussian/msp.npz")
"""
import os

from lib.common import job_logger, load_npz, save_npz_atomic, write_json_atomic
from lib.evaluate.metrics import accuracy, detection_metrics, nll
from lib.evaluate.scores import compute_score

MAHALANOBIS_STATS = "mahalanobis_stats.npz"  # written by lib.evaluate.forward beside the logits


def train_stats_file(logit_dir):
    return os.path.join(logit_dir, MAHALANOBIS_STATS)


def load_train_stats(path):
    """class_means and precision of one model's training features (lib.evaluate.forward wrote them)."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: the Mahalanobis statistics of this model are missing; rerun its evaluate job "
            "(snakemake --forcerun evaluate), which fits them on the training split")
    stats = load_npz(path)
    missing = {"class_means", "precision"} - set(stats)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}; rerun the model's evaluate job to rewrite it")
    return stats


def example_scores(id_path, ood_path, score, train_stats=None):
    """Per-example scores (float64) of the ID test set and of one OOD set."""
    id_out, ood_out = load_npz(id_path), load_npz(ood_path)
    return compute_score(score, id_out, train_stats), compute_score(score, ood_out, train_stats)


def detection_record(id_path, ood_path, score, train_stats=None):
    """AUROC, AUPR-in, AUPR-out, FPR95 (OOD = positive class) of one score on one set."""
    return {"score": score, **detection_metrics(*example_scores(id_path, ood_path, score, train_stats))}


def load_example_scores(path):
    """(id_scores, ood_scores) that a score job saved (score_job's out_npz)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: per-example scores are missing; rerun the score rule that writes them "
                                "(snakemake --forcerun score)")
    saved = load_npz(path)
    if set(saved) != {"id_scores", "ood_scores"}:
        raise ValueError(f"{path} holds {sorted(saved)}, not id_scores and ood_scores; rerun the score rule")
    return saved["id_scores"], saved["ood_scores"]


def score_job(id_path, ood_path, wildcards, out_json, log_path, train_stats_path=None, out_npz=None):
    """The detection metrics of one (model, OOD set, score) as JSON; with out_npz also the
    per-example scores (id_scores, ood_scores, float64), which the differences step resamples."""
    log = job_logger(log_path)
    train_stats = load_train_stats(train_stats_path) if train_stats_path else None
    id_scores, ood_scores = example_scores(id_path, ood_path, wildcards.score, train_stats)
    record = {"score": wildcards.score, **detection_metrics(id_scores, ood_scores)}
    record.update(augment=wildcards.augment, oe=wildcards.oe, seed=int(wildcards.seed),
                  ood_set=wildcards.ood_set, source=str(ood_path))
    if out_npz:
        save_npz_atomic(out_npz, id_scores=id_scores, ood_scores=ood_scores)
    write_json_atomic(out_json, record)
    log.info("%s", record)


def accuracy_job(id_path, wildcards, out_json, log_path):
    log = job_logger(log_path)
    out = load_npz(id_path)
    record = {"augment": wildcards.augment, "oe": wildcards.oe, "seed": int(wildcards.seed),
              "accuracy": accuracy(out["logits"], out["labels"]), "nll": nll(out["logits"], out["labels"]),
              "n": int(len(out["labels"])), "source": str(id_path)}
    write_json_atomic(out_json, record)
    log.info("%s", record)
