"""Classification and OOD-detection metrics on cached logits and scores.

    from lib.metrics import accuracy, auroc
    acc = accuracy(logits, labels)            # fraction in [0, 1]
    a = auroc(id_scores, ood_scores)          # OOD is the positive class

Detection convention: OOD examples are the positive class and a higher score
means "more anomalous" (see lib.scores), so AUROC = P(score_ood > score_id)
+ 0.5 P(tie).
"""

import numpy as np
from sklearn.metrics import roc_auc_score


def _scores_and_targets(id_scores, ood_scores):
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores = np.asarray(ood_scores, dtype=np.float64).ravel()
    if id_scores.size == 0 or ood_scores.size == 0:
        raise ValueError(
            f"detection metrics need both ID and OOD examples; got {id_scores.size} ID "
            f"and {ood_scores.size} OOD scores"
        )
    if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()):
        raise ValueError("detection scores contain NaN or inf; check the cached logits")
    scores = np.concatenate([id_scores, ood_scores])
    is_ood = np.concatenate([np.zeros(id_scores.size, int), np.ones(ood_scores.size, int)])
    return scores, is_ood


def accuracy(logits, labels):
    """Top-1 accuracy of `logits` [N, C] against integer `labels` [N]; float in [0, 1]."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"need logits [N, C] and labels [N]; got {logits.shape} and {labels.shape}")
    return float(np.mean(logits.argmax(axis=1) == labels))


def auroc(id_scores, ood_scores):
    """Area under the ROC curve, OOD positive (sklearn roc_auc_score); float in [0, 1]."""
    scores, is_ood = _scores_and_targets(id_scores, ood_scores)
    return float(roc_auc_score(is_ood, scores))
