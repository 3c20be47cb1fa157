"""Out-of-distribution scores: one number per example, higher = more anomalous.

Every score is a pure numpy function of what the evaluate job cached for one
(model, evaluation set): logits [N, C], penultimate features [N, D] and ODIN
logits [N, C] (already divided by the ODIN temperature). Call them by name:

    from lib.evaluate.scores import SCORE_NAMES, compute_score
    s = compute_score("msp", {"logits": logits})             # -> float64 [N]
    s = compute_score("mahalanobis", {"features": feats}, train_stats=stats)
    s = compute_score("vim", {"features": feats}, train_stats=posthoc)   # posthoc: fit_posthoc(...)

An extension file adds a score by name (SCORE_INPUTS then lists it too):

    register_score("margin", lambda z: -np.diff(np.sort(z, axis=1)[:, -2:], axis=1)[:, 0])

The evaluate job, which has the model, produces the two inputs that need more
than logits:

    from lib.evaluate.scores import odin_logits, fit_mahalanobis
    z_odin = odin_logits(model, x)             # x float [B, 1, 28, 28] in [0, 1]
    stats = fit_mahalanobis(train_features, train_labels)   # class_means, precision
    posthoc = fit_posthoc(train_features, head_weight, head_bias, percentile=90,
                          dimension=vim_dimension(train_features.shape[1]))  # vim, react
    d = knn_score(feats, normalise_rows(train_features), k=50)   # cached as "knn_distance"

Which arrays of `train_stats` each score reads: SCORE_STATS. The hyperparameters (ODIN's
T and eps, knn's k, ReAct's percentile, ViM's dimension) default to the papers' values
below; lib.evaluate.tuning may replace them by values tuned on validation OOD sets.

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
    knn          ||f' - f'_(k)||, the distance of the L2-normalised features f' = f / ||f||
                 to their k-th nearest neighbour among the normalised training features
                 (exact search), k = 50. Sun, Ming, Zhu & Li 2022, "Out-of-Distribution
                 Detection with Deep Nearest Neighbors" (ICML): their ID score is the
                 negative distance; ours is the distance. Scaling f changes nothing. The
                 evaluate job computes it once per set (knn_score, against the whole
                 training split) and caches it as `knn_distance` [N]: every OOD set's
                 score job would otherwise search the training split for the ID test set
                 again.
    vim          alpha * ||(f - u) R|| - logsumexp(z): u = -pinv(W) b, the point the head
                 (W, b) maps to zero logits; R an orthonormal basis of the complement of
                 the D-dimensional principal subspace of the training features centred at
                 u; alpha = mean max logit / mean residual norm on the training set.
                 Wang, Li, Feng & Zhang 2022, "ViM: Out-Of-Distribution with
                 Virtual-logit Matching" (CVPR): their OOD score is the softmax probability
                 of the virtual logit alpha * ||(f - u) R|| among the logits,
                 sigmoid(alpha * residual - logsumexp(z)), a monotone function of ours.
                 D by the feature width N (vim_dimension): 1000 for N >= 1500, 512 for
                 N >= 768, else N // 2, the paper's rule.
    react        -logsumexp(W min(f, c) + b): the energy score after clipping every
                 penultimate activation at c, the 90th percentile of all training
                 activations pooled over units. Sun, Guo & Li 2021, "ReAct:
                 Out-of-distribution Detection With Rectified Activations" (NeurIPS).
    gen          sum over the M largest softmax probabilities p of p^g (1 - p)^g, g = 0.1,
                 M = every class (10 for digits): a generalised entropy. Liu, Lochman &
                 Zach 2023, "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution
                 Detection" (CVPR): their ID score is -G; ours is G. Adding a constant to
                 every logit changes nothing.
"""

import numpy as np
import scipy.linalg
from scipy.special import logsumexp, softmax

from lib.config import RegistrationError, claim_name

# The built-in scores; SCORE_INPUTS holds them and those registered by extension files.
SCORE_NAMES = ("msp", "xent", "energy", "maxlogit", "odin", "mahalanobis", "knn", "vim", "react", "gen")

# What compute_score reads from `outputs` for each score.
SCORE_INPUTS = {
    "msp": "logits",
    "xent": "logits",
    "energy": "logits",
    "maxlogit": "logits",
    "odin": "odin_logits",
    "mahalanobis": "features",
    "knn": "knn_distance",
    "vim": "features",
    "react": "features",
    "gen": "logits",
}

# What compute_score reads from `train_stats` for each score that needs the training set:
# fit_mahalanobis gives the first, fit_posthoc the others.
def headline_score(scores):
    """The score the summary reads: MSP when the study has it, else its first score."""
    scores = list(scores)
    return "msp" if "msp" in scores else (scores[0] if scores else None)


SCORE_STATS = {
    "mahalanobis": ("class_means", "precision"),
    "vim": ("head_weight", "head_bias", "vim_origin", "vim_residual_basis", "vim_alpha"),
    "react": ("head_weight", "head_bias", "react_threshold"),
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
KNN_K = 50                 # Sun et al. 2022, CIFAR-10 with the whole training set
REACT_PERCENTILE = 90.0    # Sun, Guo & Li 2021
GEN_GAMMA = 0.1            # Liu, Lochman & Zach 2023
GEN_TOP_M = None           # None: every class (the paper's M = C for small label sets)
# Rows of the training bank compared with a chunk of test rows at once in knn_score: the
# chunk's distance block holds at most this many float64 numbers (128 MiB).
KNN_BLOCK = 1 << 24


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


def normalise_rows(features):
    """Each row of `features` [N, D] divided by its L2 norm (a zero row stays zero); float64."""
    features = _as_2d(features, "features")
    # The small constant keeps an all-zero row (a dead layer) finite instead of NaN.
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-10)


def knn_distances(features, bank, ks, block=KNN_BLOCK):
    """Distances of each normalised row of `features` [N, D] to its k-th nearest row of
    `bank`, for every k of `ks`; float64 [N, len(ks)].

    `bank` [M, D]: the L2-normalised training features (normalise_rows). Exact search in
    chunks of test rows, so that memory stays at `block` distances whatever N: squared
    distances ||a||^2 + ||b||^2 - 2 a.b, one matrix product per chunk.
    """
    queries = normalise_rows(features)
    bank = _as_2d(bank, "knn bank")
    ks = [int(k) for k in ks]
    if bank.shape[1] != queries.shape[1]:
        raise ValueError(f"knn bank {bank.shape} does not match the features {queries.shape}: both must be "
                         "penultimate features of the same model")
    if not all(1 <= k <= len(bank) for k in ks):
        raise ValueError(f"knn: k = {ks} needs 1 <= k <= {len(bank)} (the training features in the bank)")
    bank_norms = np.einsum("md,md->m", bank, bank)   # 1, or 0 for an all-zero training row
    rows = max(1, block // len(bank))
    out = np.empty((len(queries), len(ks)))
    for start in range(0, len(queries), rows):
        chunk = queries[start:start + rows]
        squared = chunk @ bank.T
        squared *= -2.0          # in place: a chunk's block is the largest array here
        squared += bank_norms
        kth = np.partition(squared, [k - 1 for k in ks], axis=1)[:, [k - 1 for k in ks]]
        out[start:start + rows] = np.sqrt(np.clip(kth + np.einsum("nd,nd->n", chunk, chunk)[:, None], 0.0, None))
    return out


def knn_score(features, bank, k=KNN_K, block=KNN_BLOCK):
    """Distance of each normalised row of `features` [N, D] to its k-th nearest row of the
    normalised training `bank` (knn_distances); float64 [N], in [0, 2]."""
    return knn_distances(features, bank, [k], block)[:, 0]


def cached_knn_score(knn_distance):
    """The knn score from the evaluate job's cached `knn_distance` [N] (knn_score); float64 [N]."""
    d = np.asarray(knn_distance, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"knn_distance must be a 1-d array [N]; got shape {d.shape}")
    return d


def head_logits(features, weight, bias):
    """The linear head's logits f W^T + b of features [N, D], W [C, D], b [C]; float64 [N, C]."""
    features, weight = _as_2d(features, "features"), _as_2d(weight, "head_weight")
    bias = np.asarray(bias, dtype=np.float64)
    if weight.shape[1] != features.shape[1] or bias.shape != (weight.shape[0],):
        raise ValueError(f"head weight {weight.shape} and bias {bias.shape} do not match the features "
                         f"{features.shape}; refit them with fit_posthoc for the same model")
    return features @ weight.T + bias


def vim_score(features, weight, bias, origin, residual_basis, alpha):
    """ViM: alpha * ||(f - u) R|| - logsumexp(f W^T + b) for features [N, D]; float64 [N].

    `origin` u [D], `residual_basis` R [D, D - dim] and `alpha` come from fit_vim.
    """
    features = _as_2d(features, "features")
    residual = np.linalg.norm((features - np.asarray(origin, np.float64)) @ _as_2d(residual_basis, "R"), axis=1)
    return float(alpha) * residual - logsumexp(head_logits(features, weight, bias), axis=1)


def react_score(features, weight, bias, threshold):
    """ReAct: the energy score -logsumexp of the logits of min(f, threshold); float64 [N]."""
    clipped = np.minimum(_as_2d(features, "features"), float(threshold))
    return energy_score(head_logits(clipped, weight, bias))


def gen_score(logits, gamma=GEN_GAMMA, top_m=GEN_TOP_M):
    """GEN: sum of p^gamma (1 - p)^gamma over the top_m largest softmax probabilities of each
    row of `logits` [N, C] (None: all C); float64 [N], higher = more anomalous."""
    probs = softmax(_as_2d(logits, "logits"), axis=1)
    m = probs.shape[1] if top_m is None else min(int(top_m), probs.shape[1])
    top = -np.sort(-probs, axis=1)[:, :m]
    return (top ** gamma * (1.0 - top) ** gamma).sum(axis=1)


def compute_score(name, outputs, train_stats=None):
    """Score `outputs` with the score called `name`; float64 [N], higher = more anomalous.

    `outputs` maps "logits" [N, C], "features" [N, D] and "odin_logits" [N, C]
    to numpy arrays; only the entry the score needs (SCORE_INPUTS) must be
    there. `train_stats` (mahalanobis, vim, react) maps the arrays of
    SCORE_STATS[name], as returned by fit_mahalanobis and fit_posthoc.
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
    if name == "gen":
        return gen_score(values)
    if name == "knn":
        return cached_knn_score(values)
    missing = [key for key in SCORE_STATS[name] if train_stats is None or key not in train_stats]
    if missing:
        fit = "fit_mahalanobis" if name == "mahalanobis" else "fit_posthoc"
        raise ValueError(
            f"score {name!r} needs train_stats with {', '.join(map(repr, SCORE_STATS[name]))}; "
            f"{', '.join(map(repr, missing))} missing (from {fit} on the model's training-set features)"
        )
    stats = [train_stats[key] for key in SCORE_STATS[name]]
    if name == "mahalanobis":
        return mahalanobis_score(values, *stats)
    if name == "vim":
        return vim_score(values, *stats)
    return react_score(values, *stats)


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


def vim_dimension(width):
    """ViM's principal dimension D for penultimate features of `width` N: 1000 for N >= 1500,
    512 for N >= 768, else N // 2 (Wang et al. 2022's rule; 25 for oe_convnet's 50 units,
    64 for small_convnet's 128, 512 for convnet's 1024)."""
    if width >= 1500:
        return 1000
    if width >= 768:
        return 512
    return max(1, width // 2)


def fit_vim(features, weight, bias, dimension):
    """ViM's origin, residual basis and alpha from training `features` [N, D] and the head (W, b).

    u = -pinv(W) b; the principal subspace is spanned by the eigenvectors of the
    `dimension` largest eigenvalues of (1/N) sum (f - u)(f - u)^T (uncentred at the mean:
    centred at u, as in the paper); R holds the other eigenvectors, so ||(f - u) R|| is the
    norm of the residual off the principal subspace. alpha = mean max logit / mean
    residual norm over the training set, which puts the virtual logit on the logits' scale.
    Returns dict(vim_origin [D], vim_residual_basis [D, D - dimension], vim_alpha []).
    """
    features, weight = _as_2d(features, "features"), _as_2d(weight, "head_weight")
    width = features.shape[1]
    if not 1 <= int(dimension) < width:
        raise ValueError(f"vim: the principal dimension must be in 1..{width - 1} for {width} features; "
                         f"got {dimension}")
    origin = -np.linalg.pinv(weight) @ np.asarray(bias, np.float64)
    centred = features - origin
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(features))
    order = np.argsort(eigenvalues)[::-1]          # eigh sorts ascending; the largest D span the subspace
    residual_basis = np.ascontiguousarray(eigenvectors[:, order[int(dimension):]])
    residual = np.linalg.norm(centred @ residual_basis, axis=1)
    alpha = head_logits(features, weight, bias).max(axis=1).mean() / max(residual.mean(), 1e-12)
    return {"vim_origin": origin, "vim_residual_basis": residual_basis, "vim_alpha": np.float64(alpha)}


def fit_react(features, percentile=REACT_PERCENTILE):
    """ReAct's clipping threshold: the `percentile` of every training activation, units pooled."""
    return {"react_threshold": np.float64(np.percentile(_as_2d(features, "features"), float(percentile)))}


def fit_posthoc(features, weight, bias, percentile=REACT_PERCENTILE, dimension=None):
    """Everything vim and react read from the training set (SCORE_STATS), in one dict.

    `features` [N, D]: the training split's penultimate features; `weight` [C, D], `bias` [C]:
    the model's last layer; `dimension`: ViM's D (None: vim_dimension(D)).
    """
    features = _as_2d(features, "features")
    dimension = vim_dimension(features.shape[1]) if dimension is None else int(dimension)
    weight, bias = _as_2d(weight, "head_weight"), np.asarray(bias, np.float64)
    return {"head_weight": weight, "head_bias": bias, **fit_vim(features, weight, bias, dimension),
            **fit_react(features, percentile)}
