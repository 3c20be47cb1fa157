"""Out-of-distribution scores: one number per example, higher = more anomalous.

Every score is a pure numpy function of what the evaluate job cached for one
(model, evaluation set): logits [N, C], penultimate features [N, D] and ODIN
logits [N, C] (already divided by the ODIN temperature). Call them by name:

    from lib.evaluate.scores import SCORE_NAMES, compute_score
    s = compute_score("msp", {"logits": logits})             # -> float64 [N]
    s = compute_score("mahalanobis", {"features": feats}, train_stats=stats)

An extension file adds a score by name (SCORE_INPUTS then lists it too):

    register_score("margin", lambda z: -np.diff(np.sort(z, axis=1)[:, -2:], axis=1)[:, 0])

The evaluate job, which has the model, produces the two inputs that need more
than logits:

    from lib.evaluate.scores import odin_logits, fit_mahalanobis
    z_odin = odin_logits(model, x)             # x float [B, 1, 28, 28] in [0, 1]
    stats = fit_mahalanobis(train_features, train_labels)   # class_means, precision

Scores (z = logits of one example, C classes) and sources:
    msp          -max_c softmax(z)_c
                 Hendrycks & Gimpel 2017, "A Baseline for Detecting Misclassified
                 and Out-of-Distribution Examples". In [-1, -1/C]; flat logits
                 give -1/C.
    xent         mean_c z_c - logsumexp(z) = -H(U, softmax(z)), minus the
                 cross-entropy from the uniform distribution U to the softmax.
                 Hendrycks, Mazeika & Dietterich 2019, "Deep Anomaly Detection
                 with Outlier Exposure": OE's training term on outliers and its
                 test-time score; the study's "cross entropy" score. H(U, .) is
                 smallest (log C) for flat logits and large for confident ones,
                 so the score is its negation: at most -log C, reached by flat
                 logits.
    energy       -logsumexp(z), the free energy E = -T logsumexp(z / T) at T = 1.
                 Liu, Wang, Owens & Li 2020, "Energy-based Out-of-distribution
                 Detection": in-distribution inputs get lower energy.
    maxlogit     -max_c z_c. Hendrycks et al. 2022, "Scaling Out-of-Distribution
                 Detection for Real-World Settings" (MaxLogit).
    odin         -max_c softmax(z~ / T)_c with z~ the logits of the perturbed
                 input x~ = x - eps * sign(-grad_x log max_c softmax(f(x) / T)_c),
                 T = 1000, eps = 0.0014. Liang, Li & Srikant 2018, "Enhancing the
                 Reliability of Out-of-distribution Image Detection in Neural
                 Networks" (ODIN). The perturbation raises the max softmax, more
                 for in- than for out-of-distribution inputs.
    mahalanobis  min_c (f - mu_c)^T P (f - mu_c) over the penultimate features f,
                 class means mu_c and P the (pseudo-)inverse of one covariance
                 shared by all classes, fitted on the training set. Lee, Lee, Lee
                 & Shin 2018, "A Simple Unified Framework for Detecting
                 Out-of-Distribution Samples and Adversarial Attacks": their
                 confidence score is max_c -(f - mu_c)^T P (f - mu_c); ours is its
                 negation, the squared Mahalanobis distance to the closest class
                 mean (a monotone function of the distance, so every rank-based
                 detection metric is the same). Penultimate layer only, without
                 the input preprocessing and layer ensemble of the paper.
"""

import numpy as np
import scipy.linalg
from scipy.special import logsumexp, softmax

from lib.config import RegistrationError, claim_name

# The built-in scores; SCORE_INPUTS holds them and those registered by extension files.
SCORE_NAMES = ("msp", "xent", "energy", "maxlogit", "odin", "mahalanobis")

# What compute_score reads from `outputs` for each score.
SCORE_INPUTS = {
    "msp": "logits",
    "xent": "logits",
    "energy": "logits",
    "maxlogit": "logits",
    "odin": "odin_logits",
    "mahalanobis": "features",
}

# Scores registered by extension files (register_score): name -> function of the cached
# array that SCORE_INPUTS names for it.
SCORE_FUNCTIONS = {}


def register_score(name, function, needs="logits"):
    """Make `function(array) -> [N] scores, higher = more anomalous` the score `name`.

    `needs` is what it reads of the evaluate job's cache: "logits" [N, C] or "features"
    [N, D] (penultimate layer). Called from an extension file (docs/extensions.md); a
    name the table already has is refused.
    """
    if needs not in ("logits", "features"):
        raise RegistrationError(f"register_score({name!r}): needs={needs!r}; use 'logits' or 'features'")
    if not callable(function):
        raise RegistrationError(f"register_score({name!r}): {function!r} is not a function")
    claim_name("scores", name, [(SCORE_INPUTS, needs), (SCORE_FUNCTIONS, function)])


def _registered_score(name, values):
    """A registered score's values, checked: one finite number per example."""
    n = len(values)
    scores = np.asarray(SCORE_FUNCTIONS[name](values), dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"score {name!r} returned shape {scores.shape} for {n} examples; it must return one "
                         "number per example, shape [N]")
    if not np.isfinite(scores).all():
        raise ValueError(f"score {name!r} returned {int((~np.isfinite(scores)).sum())} non-finite values of "
                         f"{n}; fix its function")
    return scores


ODIN_TEMPERATURE = 1000.0
ODIN_EPSILON = 0.0014


def _as_2d(array, what):
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array [N, K]; got shape {array.shape}")
    return array


def msp_score(logits):
    """-max softmax probability of each row of `logits` [N, C]; float64 [N]."""
    return -softmax(_as_2d(logits, "logits"), axis=1).max(axis=1)


def xent_score(logits):
    """mean(z) - logsumexp(z) of each row of `logits` [N, C]; float64 [N], <= -log C."""
    z = _as_2d(logits, "logits")
    return z.mean(axis=1) - logsumexp(z, axis=1)


def energy_score(logits):
    """-logsumexp(z) of each row of `logits` [N, C] (free energy at T = 1); float64 [N]."""
    return -logsumexp(_as_2d(logits, "logits"), axis=1)


def maxlogit_score(logits):
    """-max logit of each row of `logits` [N, C]; float64 [N]."""
    return -_as_2d(logits, "logits").max(axis=1)


def odin_score(odin_logits_array):
    """-max softmax of ODIN logits [N, C] (perturbed-input logits already divided by T)."""
    return msp_score(odin_logits_array)


def mahalanobis_score(features, class_means, precision):
    """Squared Mahalanobis distance of `features` [N, D] to the closest class mean.

    `class_means` [C, D] and `precision` [D, D] come from fit_mahalanobis.
    Returns float64 [N], >= 0 for a positive semi-definite precision.
    """
    features = _as_2d(features, "features")
    class_means = _as_2d(class_means, "class_means")
    precision = _as_2d(precision, "precision")
    d = features.shape[1]
    if class_means.shape[1] != d or precision.shape != (d, d):
        raise ValueError(
            f"mahalanobis statistics do not match the features: features {features.shape}, "
            f"class_means {class_means.shape}, precision {precision.shape}; refit them with "
            "fit_mahalanobis on training features of the same model"
        )
    # One class at a time: C is small, and differences avoid the cancellation of
    # expanding f^T P f - 2 f^T P mu + mu^T P mu.
    distances = np.empty((features.shape[0], class_means.shape[0]))
    for c, mean in enumerate(class_means):
        diff = features - mean
        distances[:, c] = np.einsum("nd,nd->n", diff @ precision, diff)
    return distances.min(axis=1)


def compute_score(name, outputs, train_stats=None):
    """Score `outputs` with the score called `name`; float64 [N], higher = more anomalous.

    `outputs` maps "logits" [N, C], "features" [N, D] and "odin_logits" [N, C]
    to numpy arrays; only the entry the score needs (SCORE_INPUTS) must be
    there. `train_stats` (mahalanobis only) maps "class_means" [C, D] and
    "precision" [D, D], as returned by fit_mahalanobis.
    """
    if name not in SCORE_INPUTS:
        raise ValueError(f"unknown score {name!r}; allowed: {', '.join(SCORE_INPUTS)}")
    key = SCORE_INPUTS[name]
    if key not in outputs:
        raise KeyError(
            f"score {name!r} needs {key!r} in the cached outputs, which hold only "
            f"{sorted(outputs)}; rerun the evaluate job so that it saves {key!r}"
        )
    values = outputs[key]
    if name in SCORE_FUNCTIONS:
        return _registered_score(name, values)
    if name == "msp":
        return msp_score(values)
    if name == "xent":
        return xent_score(values)
    if name == "energy":
        return energy_score(values)
    if name == "maxlogit":
        return maxlogit_score(values)
    if name == "odin":
        return odin_score(values)
    if train_stats is None or "class_means" not in train_stats or "precision" not in train_stats:
        raise ValueError(
            "score 'mahalanobis' needs train_stats with 'class_means' and 'precision' "
            "(from fit_mahalanobis on the model's training-set features)"
        )
    return mahalanobis_score(values, train_stats["class_means"], train_stats["precision"])


def odin_logits(model, x, temperature=ODIN_TEMPERATURE, epsilon=ODIN_EPSILON):
    """Logits of the ODIN-perturbed batch `x`, divided by `temperature`.

    `model(x)` maps float [B, 1, 28, 28] images in [0, 1] to logits [B, C].
    The perturbation is the ODIN step x~ = x - epsilon * sign(-grad_x log S(x)),
    S the temperature-scaled max softmax: a gradient step on the input that
    raises S. log S(x) is minus the cross-entropy of f(x)/T to the predicted
    label, whose input gradient is what we take. x~ is not clipped to [0, 1],
    as in ODIN (which perturbs normalised inputs without clipping).

    The model's parameters are left untouched (no .grad accumulates on them)
    and the model should be in eval mode. Returns a detached float tensor
    [B, C] on x's device; odin_score of it (after .cpu().numpy()) is the
    ODIN score. With epsilon = 0 and temperature = 1 it is the plain logits.
    """
    # torch is imported here, not at the top: the workflow's score and metric rules import
    # this module in every job (Snakemake re-reads the Snakefile per job) and need numpy only.
    import torch
    import torch.nn.functional as F

    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scaled = model(x) / temperature
        predicted = scaled.argmax(dim=1)
        # Summed over the batch: each example's loss depends on its own input only.
        loss = F.cross_entropy(scaled, predicted, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    # grad is -grad log S; ODIN subtracts eps * sign(-grad log S).
    perturbed = x.detach() - epsilon * torch.sign(grad)
    with torch.no_grad():
        return model(perturbed) / temperature


def fit_mahalanobis(features, labels):
    """Class means and the precision of one shared covariance of training `features`.

    `features` [N, D] (penultimate layer), `labels` [N] integers 0..C-1, every
    class present. The shared covariance is the maximum-likelihood estimate
    (1/N) sum_i (f_i - mu_{y_i})(f_i - mu_{y_i})^T, as in Lee et al. 2018. Its
    precision is the Moore-Penrose pseudo-inverse (scipy.linalg.pinvh), so
    that directions with no variance (for instance ReLU units dead on every
    training image) add nothing to the distance instead of blowing it up.
    Returns dict(class_means=float64 [C, D], precision=float64 [D, D]).
    """
    features = _as_2d(features, "features")
    labels = np.asarray(labels)
    if labels.shape != (features.shape[0],):
        raise ValueError(f"need labels [N] for features {features.shape}; got {labels.shape}")
    if labels.size == 0 or labels.min() < 0:
        raise ValueError("fit_mahalanobis needs labelled training features (labels >= 0)")
    n_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"fit_mahalanobis: classes {missing} have no training features")
    class_means = np.stack([features[labels == c].mean(axis=0) for c in range(n_classes)])
    centred = features - class_means[labels]
    covariance = centred.T @ centred / features.shape[0]
    precision = scipy.linalg.pinvh(covariance)
    return {"class_means": class_means, "precision": precision}
