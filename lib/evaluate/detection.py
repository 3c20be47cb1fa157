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
              augment="none", oe="baseline", seed=1, ood_set="gaussian", score="msp",
              out_npz="results/scores/none/baseline/seed1/gaussian/msp.npz",
              protocol={"protocol": "oe_paper", "draws": 10, "ood_fraction": 0.2}, base_seed=0)
    id_scores, ood_scores = load_example_scores(layout.example_scores_file("gaussian", "msp", "none", "baseline", 1))

Protocols (config `evaluation`): `full` scores every ID test image against every OOD
image. `oe_paper` is the Outlier Exposure authors' (hendrycks/outlier-exposure,
MNIST/test.py): each draw takes ood_fraction x n_id OOD images at random without
replacement (all of them when the set is smaller), the metrics are computed per draw
against the whole ID test set, and the record holds their mean over the draws (under
the usual names), their std (`<metric>_draw_std`, ddof=0 as numpy's default that the
authors printed) and every draw's values (`draws`). The draws depend on the config seed
and the OOD set only, so every model is scored on the same images.
"""
import os

import numpy as np

from lib.common import MissingCachedFileError, derive_seed, job_logger, load_npz, save_npz_atomic, write_json_atomic
from lib.evaluate.metrics import detection_metrics
from lib.evaluate.scores import compute_score

FULL = {"protocol": "full"}
DRAWN_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_nearest")


def load_train_stats(path):
    """class_means and precision of one model's training features (lib.evaluate.forward wrote them)."""
    if not os.path.exists(path):
        raise MissingCachedFileError(
            f"{path}: the Mahalanobis statistics of this model are missing; rerun its evaluate job, which "
            "fits them on the training split: the same snakemake command does (docs/failure-modes.md)")
    return load_npz(path, required=("class_means", "precision"))


def example_scores(id_path, ood_path, score, train_stats=None):
    """Per-example scores (float64) of the ID test set and of one OOD set."""
    id_out, ood_out = load_npz(id_path, required=("logits",)), load_npz(ood_path, required=("logits",))
    return compute_score(score, id_out, train_stats), compute_score(score, ood_out, train_stats)


def ood_draws(n_id, n_ood, draws, ood_fraction, seed):
    """Index arrays of the oe_paper protocol's OOD draws: round(ood_fraction x n_id) each, seeded."""
    size = min(n_ood, max(1, int(round(ood_fraction * n_id))))
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n_ood, size=size, replace=False)) for _ in range(draws)]


def drawn_metrics(id_scores, ood_scores, draws, ood_fraction, seed):
    """detection_metrics per OOD draw, and their mean (metric) and std (metric_draw_std) over the draws."""
    per_draw = [detection_metrics(id_scores, ood_scores[idx])
                for idx in ood_draws(len(id_scores), len(ood_scores), draws, ood_fraction, seed)]
    out = {"protocol": "oe_paper", "n_draws": len(per_draw), "n_id": per_draw[0]["n_id"],
           "n_ood": per_draw[0]["n_ood"], "n_ood_total": int(len(ood_scores)), "draws": per_draw}
    for metric in DRAWN_METRICS:
        values = np.array([d[metric] for d in per_draw])
        out[metric], out[f"{metric}_draw_std"] = float(values.mean()), float(values.std())
    return out


def protocol_metrics(id_scores, ood_scores, protocol=FULL, draw_seed=0):
    """The detection metrics of one score's ID and OOD values under `protocol` (full or oe_paper)."""
    if protocol["protocol"] == "oe_paper":
        return drawn_metrics(id_scores, ood_scores, protocol["draws"], protocol["ood_fraction"], draw_seed)
    return {"protocol": "full", **detection_metrics(id_scores, ood_scores)}


def detection_record(id_path, ood_path, score, train_stats=None, protocol=FULL, draw_seed=0):
    """AUROC, AUPR-in, AUPR-out, FPR95 (OOD = positive class) of one score on one set, under `protocol`."""
    return {"score": score, **protocol_metrics(*example_scores(id_path, ood_path, score, train_stats),
                                               protocol, draw_seed)}


def load_example_scores(path):
    """(id_scores, ood_scores) that a score job saved (score_job's out_npz), checked by load_npz."""
    saved = load_npz(path, required=("id_scores", "ood_scores"))
    return saved["id_scores"], saved["ood_scores"]


def score_job(id_path, ood_path, out_json, log_path, *, augment, oe, seed, ood_set, score, train_stats_path=None,
              out_npz=None, protocol=FULL, base_seed=0):
    """The per-(model, OOD set, score) rule: detection_record plus the model and set, written as JSON;
    with out_npz also the per-example scores (id_scores, ood_scores, float64, every image whatever
    the protocol), which the differences step resamples."""
    log = job_logger(log_path)
    train_stats = load_train_stats(train_stats_path) if train_stats_path else None
    id_scores, ood_scores = example_scores(id_path, ood_path, score, train_stats)
    record = {"score": score, **protocol_metrics(id_scores, ood_scores, protocol,
                                                 derive_seed(base_seed, "ood_draws", ood_set))}
    record.update(augment=augment, oe=oe, seed=int(seed), ood_set=ood_set, source=str(ood_path))
    if out_npz:
        save_npz_atomic(out_npz, id_scores=id_scores, ood_scores=ood_scores)
    write_json_atomic(out_json, record)
    log.info("%s", record)
