"""Out-of-distribution scores: one number per example, higher = more anomalous.

Every score is a pure numpy function of what the evaluate job cached for one
(model, evaluation set): logits [N, C], penultimate features [N, D] and ODIN
logits [N, C]. Call them by name:

    from lib.scores import SCORE_NAMES, compute_score
    s = compute_score("msp", {"logits": logits})             # -> float64 [N]

Scores (z = logits of one example, C classes) and sources:
    msp    -max_c softmax(z)_c
           Hendrycks & Gimpel 2017, "A Baseline for Detecting Misclassified and
           Out-of-Distribution Examples". In [-1, -1/C]; flat logits give -1/C.
    xent   mean_c z_c - logsumexp(z)
           = -H(U, softmax(z)), minus the cross-entropy from the uniform
           distribution U to the softmax (= -(KL(U || softmax) + log C)).
           Hendrycks, Mazeika & Dietterich 2019, "Deep Anomaly Detection with
           Outlier Exposure": OE's training term on outliers and its test-time
           score; the study's "cross entropy" score. H(U, softmax) is smallest
           (log C) for flat logits and large for confident ones, so the score
           is its negation: at most -log C, reached by flat logits.
"""

import numpy as np
from scipy.special import logsumexp, softmax

SCORE_NAMES = ("msp", "xent")


def _as_logits(logits):
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be a 2-d array [N, C]; got shape {logits.shape}")
    return logits


def msp_score(logits):
    """-max softmax probability of each row of `logits` [N, C]; float64 [N]."""
    return -softmax(_as_logits(logits), axis=1).max(axis=1)


def xent_score(logits):
    """mean(z) - logsumexp(z) of each row of `logits` [N, C]; float64 [N], <= -log C."""
    z = _as_logits(logits)
    return z.mean(axis=1) - logsumexp(z, axis=1)


def compute_score(name, outputs, train_stats=None):
    """Score `outputs` (a mapping of numpy arrays) with the score called `name`.

    Returns float64 [N], higher = more anomalous.
    """
    if name not in SCORE_NAMES:
        raise ValueError(f"unknown score {name!r}; allowed: {', '.join(SCORE_NAMES)}")
    if name == "msp":
        return msp_score(outputs["logits"])
    return xent_score(outputs["logits"])
