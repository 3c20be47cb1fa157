"""Statistics that tell models apart: summaries over seeds, a two-level bootstrap for a
difference, multiple-comparison control, ranks with critical differences, detectable differences.

    from lib.evaluate import stats
    stats.mean_std([0.991, 0.993, 0.990])                   # mean, std (ddof=1), n
    stats.paired_difference_ci(model_by_seed, baseline_by_seed)  # t interval over seeds alone
    # one entry per seed (paired: seed s of one model with seed s of the other); an entry is
    # a tuple of per-example groups, each resampled on its own
    stats.hierarchical_bootstrap([(correct_s1,), (correct_s2,)], [(base_s1,), (base_s2,)], "mean")
    stats.hierarchical_bootstrap([(id_s1, ood_s1), ...], [(b_id_s1, b_ood_s1), ...], "auroc")
    stats.hierarchical_bootstrap([(conf_correct_s1,), ...], [...], "ece")   # [n, 2] columns
    stats.half_width(se_seeds, se_examples, n_seeds)     # arrays of comparisons at once
    stats.p_value(diff, se_seeds, se_examples, n_seeds)
    stats.holm([0.01, 0.04, 0.03])                          # Holm-adjusted p-values
    stats.friedman(values)                                  # blocks x treatments -> ranks, chi2, p
    stats.nemenyi_cd(k=4, n_blocks=10)                      # 1.48 (Demsar 2006)
    stats.detectable_difference(seed_sd, example_se, n_seeds)
    stats.seeds_needed(0.005, seed_sd, example_se)

The two-level (hierarchical) bootstrap of a difference, paired by seed and by example.
Examples: each of B replicates draws the test examples with replacement, the same draw for
both models and for every seed (all seeds were tested on the same images, so the test set's
noise is shared by the seeds and must not be averaged away across them); a set of several
groups, ID and OOD for AUROC or the corruptions of MNIST-C, is drawn group by group. A draw
is a weight per example (bincount of an index matrix), so every replicate of every model is
one matrix product (means, ECE bins) or one cumulative sum over the sorted scores (AUROC as
the Mann-Whitney count), with no Python loop over replicates. Seeds: the seed level is
averaged over every possible draw of the S seeds instead of sampled (S is small, so sampling
it would only add noise): the mean over S seeds drawn with replacement has variance
(S-1)/S s^2/S, s the standard deviation of the per-seed differences, used as s^2/S.

The variance of the difference then has two parts: se_seeds^2 = s^2/S (training
randomness: seeds differ as a whole and in which single images they get right) and
se_examples^2 = the variance of the replicate differences (mean over the seeds) minus the
per-seed share already in s^2 (it counts once). The interval is
diff +- sqrt(t_{S-1}^2 se_seeds^2 + z^2 se_examples^2), each part with its own quantile at
(1 + level)/2 (Banerjee 1961: s^2 has S - 1 degrees of freedom, the example part many; at
least as wide as the exact interval); the two-sided p-value for diff = 0 is the largest alpha
whose (1 - alpha) interval still holds 0. With one seed there is no seed part: the normal
interval of the example bootstrap. p-values come from the standard error, not from counting
replicates, so they are not limited to multiples of 1/B and a Holm correction over hundreds
of comparisons works with B = 200 replicates (enough for a standard error: Efron &
Tibshirani 1993, section 6.4). In simulations with known seed and example variance
(tests/test_stats.py) the 95% interval covers the true difference 95-98% of the time with
2 to 10 seeds; a Satterthwaite t interval with the same standard error covers 89-94%.
"""

import numpy as np
from scipy import sparse, special
from scipy import stats as scipy_stats

from lib.evaluate.metrics import confidence_bin, ece

LEVEL = 0.95
N_BOOT = 200
ECE_BINS = 15
STATISTICS = ("mean", "auroc", "ece")


def _values(values, what):
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"{what} is empty; need at least one value")
    return values


def mean_std(values):
    """Mean and sample standard deviation (ddof = 1) of `values`, with n.

    Returns dict(mean, std, n). With a single value the sample std is
    undefined and comes back as NaN (the report shows the mean with n = 1).
    """
    values = _values(values, "values")
    std = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    return {"mean": float(values.mean()), "std": std, "n": int(values.size)}


def paired_difference_ci(model_values, baseline_values, level=LEVEL):
    """Confidence interval of the mean of (model - baseline), paired over seeds.

    `model_values` and `baseline_values` hold one number per seed, in the same
    seed order. Student t interval: mean(d) +- t_{(1+level)/2, n-1} sd(d) / sqrt(n),
    d the per-seed differences, sd with ddof = 1. It covers training randomness only
    (the test set is fixed); hierarchical_bootstrap covers both. With one seed the
    interval is undefined: low and high are NaN.
    """
    model_values = _values(model_values, "model_values")
    baseline_values = _values(baseline_values, "baseline_values")
    if model_values.shape != baseline_values.shape:
        raise ValueError(
            f"paired over seeds needs one value per seed for both; got {model_values.size} "
            f"model and {baseline_values.size} baseline values"
        )
    _check_level(level)
    d = model_values - baseline_values
    n = d.size
    diff = float(d.mean())
    if n < 2:
        low = high = float("nan")
    else:
        half = scipy_stats.t.ppf((1 + level) / 2, n - 1) * d.std(ddof=1) / np.sqrt(n)
        low, high = diff - half, diff + half
    return {"diff": diff, "low": float(low), "high": float(high),
            "method": f"paired t interval over {n} seeds", "n": int(n), "level": level}


def _check_level(level):
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level}")


# ---- replicate weights and batched statistics -------------------------------------------


def resample_counts(n, n_boot, rng):
    """[n, n_boot] int32: how often each of n items is drawn in each replicate of n draws with
    replacement (one index matrix, counted with one bincount). One row per item, so that
    gathering items (sorting, looking up) moves whole rows."""
    if n < 1 or n_boot < 1:
        raise ValueError(f"need n >= 1 items and n_boot >= 1 replicates; got n={n}, n_boot={n_boot}")
    picks = rng.integers(0, n, size=(n_boot, n))
    picks *= n_boot
    picks += np.arange(n_boot)[:, None]  # item i in replicate b counts at i * n_boot + b
    return np.bincount(picks.ravel(), minlength=n * n_boot).reshape(n, n_boot).astype(np.int32)


def weighted_means(counts, values):
    """Replicate means: counts [n, B] (each column sums to n), values [n, K] -> [B, K]."""
    return (counts.T.astype(np.float64) @ np.asarray(values, dtype=np.float64)) / len(counts)


def weighted_ece(counts, confidence, correct, n_bins=ECE_BINS):
    """Replicate ECE of K models on the same n examples: confidence, correct [n, K] -> [B, K].

    ECE = sum over bins |sum_{i in bin} (confidence_i - correct_i)| / n, the same number as
    lib.evaluate.metrics.ece (its (n_b / n) |accuracy_b - confidence_b|); a replicate weights
    each example by its count. Bin membership depends on the confidence alone, so one sparse
    product (each example in one bin per model) gives every bin of every replicate.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    gap = confidence - np.asarray(correct, dtype=np.float64)
    n, k = gap.shape
    rows = confidence_bin(confidence, n_bins) + n_bins * np.arange(k)  # bin b of model j -> row j * n_bins + b
    spread = sparse.csr_matrix((gap.ravel(), (rows.ravel(), np.repeat(np.arange(n), k))), shape=(k * n_bins, n))
    sums = np.asarray(spread @ counts)  # [K * n_bins, B]
    return np.abs(sums).reshape(k, n_bins, -1).sum(axis=1).T / n


def auroc_replicates(id_scores, id_counts, ood_scores, ood_counts):
    """AUROC of one model on all examples and on every replicate: (observed [L], [B, L]).

    `ood_scores`, `ood_counts`: lists over L OOD sets (their scores and draws), all scored
    against the same ID scores and ID draw. The Mann-Whitney count
    (#pairs with s_ood > s_id + #ties / 2) / (n_id n_ood), each example counted as often as
    it was drawn: the ID scores are sorted once and the cumulative sums of their drawn counts
    give, per replicate, the weighted number of ID scores below each OOD score; one weighted
    sum over the OOD examples finishes it. Observed: every count 1. Equals
    lib.evaluate.metrics.auroc on each replicate's resampled scores.
    """
    id_scores = np.asarray(id_scores, dtype=np.float64)
    order = np.argsort(id_scores, kind="stable")
    sorted_id = id_scores[order]
    n_id, n_boot = id_counts.shape
    below = np.zeros((n_id + 1, n_boot), np.int32)  # below[k]: drawn count of the k lowest ID scores
    np.cumsum(id_counts[order], axis=0, out=below[1:])
    observed, reps = [], []
    for ood, counts in zip(ood_scores, ood_counts):
        ood = np.asarray(ood, dtype=np.float64)
        lo = np.searchsorted(sorted_id, ood, side="left")
        at = lo < n_id
        tied = np.flatnonzero(at & (sorted_id[np.minimum(lo, n_id - 1)] == ood))  # OOD scores equal to an ID score
        hi = np.searchsorted(sorted_id, ood[tied], side="right")
        pairs = 2.0 * n_id * len(ood)
        # int32 sums are 3x faster and exact while no sum can pass 2 n_id n_ood (the counts of a
        # replicate add up to n_ood, each weighted by at most n_id)
        total = np.int32 if pairs < 2**31 else np.int64
        twice = 2 * np.einsum("jb,jb->b", counts, below[lo], dtype=total).astype(np.float64)
        if tied.size:  # a tie counts one half: add (below at hi - below at lo) once, not twice
            twice += np.einsum("jb,jb->b", counts[tied], below[hi] - below[lo[tied]], dtype=total)
        observed.append((2 * lo.sum() + (hi - lo[tied]).sum()) / pairs)
        reps.append(twice / pairs)
    return np.array(observed), np.stack(reps, axis=1)


def _group_arrays(entry, statistic):
    groups = entry if isinstance(entry, tuple) else (entry,)
    groups = tuple(np.asarray(g) for g in groups)
    if any(g.ndim == 0 or len(g) == 0 for g in groups):
        raise ValueError("every group of per-example values must be a non-empty array")
    if statistic == "auroc" and len(groups) != 2:
        raise ValueError(f"auroc needs two groups (ID scores, OOD scores); got {len(groups)}")
    if statistic == "ece" and any(g.ndim != 2 or g.shape[1] != 2 for g in groups):
        raise ValueError("ece needs groups of [n, 2] arrays: columns confidence and correct")
    return groups


def statistic_replicates(statistic, units, counts):
    """(observed [K], replicates [B, K]) of K units (model-seeds) on the same examples.

    `units`: K tuples of groups (same group sizes); `counts`: one [n_g, B] draw per group,
    shared by every unit, so differences between units are paired by example. mean: the mean
    over groups of each group's mean (accuracy from 0/1 correctness; MNIST-C: corruptions
    weighted equally); auroc: groups (ID scores, OOD scores); ece: the mean over groups of the
    ECE of each [n, 2] (confidence, correct) group (lib.evaluate.metrics.ece).
    """
    if statistic == "auroc":
        pairs = [auroc_replicates(u[0], counts[0], [u[1]], [counts[1]]) for u in units]
        return np.array([o[0] for o, _ in pairs]), np.concatenate([r for _, r in pairs], axis=1)
    per_group = []
    for g, c in enumerate(counts):
        if statistic == "mean":
            values = np.stack([u[g] for u in units], axis=1).astype(np.float64)
            per_group.append((values.mean(axis=0), weighted_means(c, values)))
        elif statistic == "ece":
            confidence, correct = (np.stack([u[g][:, column] for u in units], axis=1) for column in (0, 1))
            per_group.append((np.array([ece(confidence[:, j], correct[:, j], ECE_BINS) for j in range(len(units))]),
                              weighted_ece(c, confidence, correct)))
        else:
            raise ValueError(f"unknown statistic {statistic!r}; allowed: {', '.join(STATISTICS)}")
    return np.mean([o for o, _ in per_group], axis=0), np.mean([r for _, r in per_group], axis=0)


# ---- the difference and its interval -----------------------------------------------------


def difference_from_replicates(model_observed, reference_observed, model_reps, reference_reps):
    """The difference model - reference and the two parts of its variance.

    model_observed, reference_observed [S]: the statistic per seed on all examples (seed s of
    one paired with seed s of the other); *_reps [B, S]: the same under each replicate's
    example draw (the same draw for every seed and both models). Returns dict(diff, se_seeds,
    se_examples, n_seeds); the module docstring gives the formulas.
    """
    d_observed = np.asarray(model_observed, dtype=np.float64) - np.asarray(reference_observed, dtype=np.float64)
    d_reps = np.asarray(model_reps, dtype=np.float64) - np.asarray(reference_reps, dtype=np.float64)
    n_seeds = d_observed.size
    if d_reps.ndim != 2 or d_reps.shape[1] != n_seeds or len(d_reps) < 2:
        raise ValueError(f"need replicates [B >= 2, {n_seeds}] (one column per seed); got {d_reps.shape}")
    v_examples = float(d_reps.mean(axis=1).var(ddof=1))
    v_seeds = 0.0
    if n_seeds > 1:
        # Seed level, averaged over every seed draw instead of sampled: the variance of the mean
        # over S seeds drawn with replacement is (S-1)/S s^2/S; rescaled by S/(S-1) it is s^2/S.
        v_seeds = float(d_observed.var(ddof=1)) / n_seeds
        # The example draw moves each seed's difference partly alike (the shared test set) and
        # partly not (seeds disagree on single images). The second part is already in the seed
        # spread s^2; `interaction` is its share of v_examples, removed so that it counts once.
        interaction = max(0.0, float(d_reps.var(axis=0, ddof=1).mean()) - v_examples) / (n_seeds - 1)
        v_examples = max(0.0, v_examples - interaction)
    return {"diff": float(d_observed.mean()), "se_seeds": float(np.sqrt(v_seeds)),
            "se_examples": float(np.sqrt(v_examples)), "n_seeds": int(n_seeds)}


def _half_width_alpha(se_seeds, se_examples, n_seeds, alpha):
    # upper-tail quantiles at alpha / 2, as minus the lower ones (1 - alpha / 2 would round to 1
    # for tiny alpha); scipy.special's ufuncs, as the bisection in p_value calls this often
    n_seeds = np.asarray(n_seeds, dtype=np.float64)
    t = np.where(n_seeds > 1, -special.stdtrit(np.maximum(n_seeds - 1, 1), alpha / 2), 0.0)
    z = -special.ndtri(alpha / 2)
    return np.sqrt((t * np.asarray(se_seeds)) ** 2 + (z * np.asarray(se_examples)) ** 2)


def half_width(se_seeds, se_examples, n_seeds, level=LEVEL):
    """Half the interval: sqrt(t_{S-1}^2 se_seeds^2 + z^2 se_examples^2) at (1 + level) / 2.

    Banerjee's (1961) interval for a sum of variance parts with different degrees of freedom:
    each part with its own quantile (the seed part's s^2 has S - 1 df, the example part's many),
    at least as wide as the exact (fiducial) interval. Arrays broadcast."""
    _check_level(level)
    return _half_width_alpha(se_seeds, se_examples, n_seeds, 1 - level)


def p_value(diff, se_seeds, se_examples, n_seeds, steps=64):
    """Two-sided p-value for diff = 0: the largest alpha whose (1 - alpha) interval (half_width)
    still holds 0, found by bisection on log10(alpha) over [1e-300, 1]; arrays broadcast."""
    diff, se_seeds, se_examples, n_seeds = np.broadcast_arrays(
        np.abs(np.asarray(diff, dtype=np.float64)), np.asarray(se_seeds, dtype=np.float64),
        np.asarray(se_examples, dtype=np.float64), np.asarray(n_seeds))
    low, high = np.full(diff.shape, -300.0), np.zeros(diff.shape)   # log10(alpha)
    for _ in range(steps):  # each step halves the bracket of every comparison at once
        mid = (low + high) / 2
        inside = _half_width_alpha(se_seeds, se_examples, n_seeds, 10.0 ** mid) >= diff
        low, high = np.where(inside, mid, low), np.where(inside, high, mid)
    p = 10.0 ** ((low + high) / 2)
    exact = (se_seeds == 0) & (se_examples == 0)  # nothing moved: the difference is exact
    return np.where(exact, np.where(diff == 0, 1.0, 0.0), np.where(diff == 0, 1.0, p))


def method_text(n_seeds, n_examples, n_boot, level=LEVEL):
    """The `method` sentence of a hierarchical_bootstrap result."""
    if n_seeds < 2:
        return (f"bootstrap over {n_examples} test examples, {n_boot} replicates (one seed: training randomness "
                f"not covered); {level:.0%} normal interval and p-value from the bootstrap SE")
    return (f"two-level bootstrap, {n_seeds} seeds x {n_examples} test examples, {n_boot} replicates; "
            f"{level:.0%} interval and p-value sqrt(t_{n_seeds - 1}^2 se_seeds^2 + z^2 se_examples^2) (Banerjee)")


def hierarchical_bootstrap(model, reference, statistic, n_boot=N_BOOT, seed=0, level=LEVEL):
    """Two-level bootstrap of statistic(model) - statistic(reference), paired by seed and example.

    `model`, `reference`: one entry per seed, in the same seed order; an entry is an array
    (one group) or a tuple of groups, the reference's of the same sizes, example for example.
    statistic: "mean" | "auroc" | "ece" (see statistic_replicates). Randomness from
    np.random.default_rng(seed). Returns difference_from_replicates' dict plus method and
    n_examples (all groups of one seed).
    """
    if len(model) != len(reference) or not model:
        raise ValueError(f"need the same seeds for model and reference, at least one; got {len(model)} "
                         f"and {len(reference)} entries")
    model = [_group_arrays(e, statistic) for e in model]
    reference = [_group_arrays(e, statistic) for e in reference]
    sizes = [len(g) for g in model[0]]
    for entry in model + reference:
        if [len(g) for g in entry] != sizes:
            raise ValueError(f"model and reference must hold the same test examples for every seed; group sizes "
                             f"{sizes} vs {[len(g) for g in entry]}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2; got {n_boot}")
    rng = np.random.default_rng(seed)
    counts = [resample_counts(n, n_boot, rng) for n in sizes]
    observed, reps = statistic_replicates(statistic, model + reference, counts)
    s = len(model)
    result = difference_from_replicates(observed[:s], observed[s:], reps[:, :s], reps[:, s:])
    half = float(half_width(result["se_seeds"], result["se_examples"], s, level))
    p = float(p_value(result["diff"], result["se_seeds"], result["se_examples"], s))
    return {**result, "low": result["diff"] - half, "high": result["diff"] + half, "p": p, "level": level,
            "n_examples": int(sum(sizes)), "method": method_text(s, int(sum(sizes)), n_boot, level)}


# ---- many comparisons ------------------------------------------------------------------


def holm(pvalues):
    """Holm-Bonferroni adjusted p-values, in the input order (Holm 1979).

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if p.size == 0:
        return p
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


# ---- ranks over data sets ------------------------------------------------------------------


def friedman(values, higher_is_better=True):
    """Friedman test of k treatments over N blocks (Demsar 2006, section 3.2.2).

    `values` [N, k]: one row per block (data set), one column per treatment (model, score).
    Ranks within each block (1 = best, ties share their mean rank). Returns dict(mean_ranks [k],
    chi2, p, n_blocks, k); chi2 and p from scipy.stats.friedmanchisquare, NaN when it is
    undefined (fewer than 3 treatments, or every block tied throughout).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 2:
        raise ValueError(f"need values [blocks, treatments] with at least 1 block and 2 treatments; got {values.shape}")
    if np.isnan(values).any():
        raise ValueError("values contain NaN: every treatment needs a value in every block")
    ranks = scipy_stats.rankdata(-values if higher_is_better else values, axis=1)
    chi2 = p = float("nan")
    if values.shape[1] >= 3 and values.shape[0] >= 2 and (ranks != ranks[:, :1]).any():
        result = scipy_stats.friedmanchisquare(*values.T)
        chi2, p = float(result.statistic), float(result.pvalue)
    return {"mean_ranks": ranks.mean(axis=0), "chi2": chi2, "p": p, "n_blocks": int(values.shape[0]),
            "k": int(values.shape[1])}


def nemenyi_cd(k, n_blocks, alpha=0.05):
    """Nemenyi critical difference of mean ranks (Demsar 2006, eq. 5 and table 5a).

    CD = q_alpha sqrt(k (k + 1) / (6 N)), q_alpha = the studentized range quantile for k
    means and infinite df, divided by sqrt(2) (scipy.stats.studentized_range). Two mean
    ranks further apart than CD differ at level alpha.
    """
    if k < 2 or n_blocks < 1:
        raise ValueError(f"need k >= 2 treatments and at least one block; got k={k}, N={n_blocks}")
    q = scipy_stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6.0 * n_blocks)))


# ---- how many seeds are enough -----------------------------------------------------------


def detectable_difference(seed_sd, example_se, n_seeds, alpha=0.05, power=0.8):
    """Smallest true difference the study's test (p_value at `alpha`) finds with probability `power`.

    MDD = h(1 - alpha/2) + h(power), h(q) = sqrt(t_{S-1,q}^2 seed_sd^2 / S + z_q^2 example_se^2):
    the usual power approximation (t_{1-alpha/2} + t_power) SE (e.g. Cohen 1988, chapter 2)
    with each variance part at its own quantile, as in half_width. seed_sd: the seed-to-seed
    standard deviation of the per-seed differences; example_se: the test examples' part of
    the standard error (more seeds do not shrink it). NaN with fewer than two seeds or
    seed_sd NaN (no spread known). Arrays broadcast.
    """
    n_seeds = np.asarray(n_seeds)
    seed_se = np.asarray(seed_sd, dtype=np.float64) / np.sqrt(np.maximum(n_seeds, 1))
    mdd = (_half_width_alpha(seed_se, example_se, n_seeds, alpha)
           + _half_width_alpha(seed_se, example_se, n_seeds, 2 * (1 - power)))
    return np.where((n_seeds >= 2) & np.isfinite(seed_se), mdd, np.nan)[()]


def detectable_floor(example_se, alpha=0.05, power=0.8):
    """The detectable difference with unlimited seeds: the test set's own noise,
    (z_{1 - alpha/2} + z_power) example_se."""
    return float((scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power)) * example_se)


def seeds_needed(difference, seed_sd, example_se, alpha=0.05, power=0.8, max_seeds=1000):
    """The fewest seeds (>= 2) whose detectable_difference is at most |difference|; None when
    even `max_seeds` cannot (the test set's noise floor, or the seed spread, is too large)."""
    if not np.isfinite(seed_sd):
        return None
    counts = np.arange(2, max_seeds + 1)
    enough = detectable_difference(seed_sd, example_se, counts, alpha, power) <= abs(difference)
    return int(counts[enough.argmax()]) if enough.any() else None
