"""Full-spectrum OOD detection: the ID test set plus its covariate-shifted copy against each OOD set.

    from lib.evaluate.full_spectrum import full_spectrum_metrics, full_spectrum_job
    m = full_spectrum_metrics(id_scores, shifted_scores, ood_scores)   # detection_metrics of ID ∪ shifted vs OOD
    full_spectrum_job(layout.logits_file("id_shifted", "none", "baseline", 1),
                      [layout.mahalanobis_stats_file("none", "baseline", 1), layout.posthoc_stats_file("none", "baseline", 1)],
                      {("gaussian", "msp"): layout.example_scores_file("gaussian", "msp", "none", "baseline", 1), ...},
                      "results/metrics/none/baseline/seed1/full_spectrum.json", "full_spectrum.log",
                      augment="none", oe="baseline", seed=1)

Yang et al., "Full-Spectrum Out-of-Distribution Detection" (IJCV 2023, arXiv:2204.05306):
a detector should flag semantic shift (new classes) but not covariate shift (the known
classes, corrupted), so the covariate-shifted images count as in-distribution. The
shifted set is lib.data.shifted's: every ID test image once, under one MNIST-C corruption.

One job per model, in Snakemake's process: for every score, the scores of the shifted set
(compute_score on its cached outputs, as the score job does for an OOD set); for every
(OOD set, score), the ID and OOD scores the score job saved, so that the clean side is
exactly the one of the detection table. Metrics: lib.evaluate.metrics.detection_metrics
with ID = concat(clean ID, shifted), OOD = the OOD set (OOD the positive class).
"""
import numpy as np

from lib.common import job_logger, load_npz, write_json_atomic
from lib.evaluate.detection import load_example_scores, load_train_stats
from lib.evaluate.metrics import detection_metrics
from lib.evaluate.scores import compute_score

FULL_SPECTRUM_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95", "n_id", "n_ood", "n_shifted")


def full_spectrum_metrics(id_scores, shifted_scores, ood_scores):
    """detection_metrics of ID ∪ shifted (the in-distribution side) against OOD, plus n_shifted."""
    shifted_scores = np.asarray(shifted_scores, dtype=np.float64)
    in_distribution = np.concatenate([np.asarray(id_scores, dtype=np.float64), shifted_scores])
    return {**detection_metrics(in_distribution, ood_scores), "n_shifted": int(len(shifted_scores))}


def full_spectrum_job(shifted_path, train_stats_paths, example_score_paths, out_json, log_path, *, augment, oe, seed):
    """The per-model rule: one record per (OOD set, score) of `example_score_paths`
    ({(ood_set, score): the score job's npz}), written as a JSON list."""
    log = job_logger(log_path)
    shifted_outputs = load_npz(shifted_path, required=("logits",))
    train_stats = load_train_stats(*train_stats_paths)  # what mahalanobis, vim and react read
    shifted = {}
    records = []
    for (ood_set, score), path in example_score_paths.items():
        if score not in shifted:
            shifted[score] = compute_score(score, shifted_outputs, train_stats)
        id_scores, ood_scores = load_example_scores(path)
        records.append(dict(augment=augment, oe=oe, seed=int(seed), ood_set=ood_set, score=score,
                            **full_spectrum_metrics(id_scores, shifted[score], ood_scores),
                            source=str(path), shifted_source=str(shifted_path)))
    write_json_atomic(out_json, records)
    log.info("%s: %d records (%d shifted images) from %s", out_json, len(records), len(shifted_outputs["logits"]),
             shifted_path)
