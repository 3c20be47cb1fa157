"""Summaries over seeds and confidence intervals for differences to a baseline.

    from lib.evaluate.stats import mean_std, paired_difference_ci, bootstrap_difference_ci
    mean_std([0.991, 0.993, 0.990])                      # mean, std (ddof=1), n
    paired_difference_ci(model_by_seed, baseline_by_seed)  # t interval over seeds
    # one seed: bootstrap over test examples, e.g. accuracy from 0/1 correctness
    bootstrap_difference_ci(model_correct, baseline_correct, np.mean)
    # AUROC-type: a tuple of groups, each resampled on its own (ID and OOD)
    bootstrap_difference_ci((m_id, m_ood), (b_id, b_ood), lib.evaluate.metrics.auroc_pair_count)

Every interval is for (model - baseline) and comes back as
dict(diff, low, high, method, n, level); `method` is a sentence for the report.
"""

import numpy as np
from scipy import stats as scipy_stats


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


def paired_difference_ci(model_values, baseline_values, level=0.95):
    """Confidence interval of the mean of (model - baseline), paired over seeds.

    `model_values` and `baseline_values` hold one number per seed, in the same
    seed order. Student t interval: mean(d) +- t_{(1+level)/2, n-1} sd(d) / sqrt(n),
    d the per-seed differences, sd with ddof = 1. With one seed the interval is
    undefined: low and high are NaN (use bootstrap_difference_ci instead).
    """
    model_values = _values(model_values, "model_values")
    baseline_values = _values(baseline_values, "baseline_values")
    if model_values.shape != baseline_values.shape:
        raise ValueError(
            f"paired over seeds needs one value per seed for both; got {model_values.size} "
            f"model and {baseline_values.size} baseline values"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    d = model_values - baseline_values
    n = d.size
    diff = float(d.mean())
    if n < 2:
        low = high = float("nan")
    else:
        half = scipy_stats.t.ppf((1 + level) / 2, n - 1) * d.std(ddof=1) / np.sqrt(n)
        low, high = diff - half, diff + half
    return {
        "diff": diff,
        "low": float(low),
        "high": float(high),
        "method": f"paired t interval over {n} seeds",
        "n": int(n),
        "level": level,
    }


def _groups(per_example, what):
    groups = per_example if isinstance(per_example, tuple) else (per_example,)
    groups = tuple(np.asarray(g) for g in groups)
    if any(g.ndim == 0 or len(g) == 0 for g in groups):
        raise ValueError(f"{what}: every group of per-example values must be a non-empty array")
    return groups


def bootstrap_difference_ci(
    model_per_example, baseline_per_example, statistic, n_boot=1000, seed=0, level=0.95
):
    """Percentile bootstrap interval of statistic(model) - statistic(baseline).

    Resamples test examples with replacement, the same examples for model and
    baseline (both were evaluated on the same test set, so the difference is
    paired by example). `model_per_example` is one array [N] (e.g. 0/1
    correctness with statistic=np.mean) or a tuple of arrays, e.g.
    (id_scores, ood_scores) with statistic=lib.evaluate.metrics.auroc_pair_count (the
    same number as lib.evaluate.metrics.auroc, faster): each array of
    the tuple is resampled on its own, so every replicate keeps the ID and OOD
    set sizes. `statistic(*groups)` returns a float. The baseline's groups must
    have the same lengths, example for example. Randomness from
    np.random.default_rng(seed). Cost: n_boot x 2 statistic calls; for AUROC
    on 10k + 10k scores with auroc_pair_count, about 4 s per 1000 resamples.
    """
    model_groups = _groups(model_per_example, "model_per_example")
    baseline_groups = _groups(baseline_per_example, "baseline_per_example")
    sizes = [len(g) for g in model_groups]
    if sizes != [len(g) for g in baseline_groups]:
        raise ValueError(
            f"model and baseline must hold the same test examples; group sizes {sizes} vs "
            f"{[len(g) for g in baseline_groups]}"
        )
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1; got level={level}, n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for b in range(n_boot):
        picks = [rng.integers(0, size, size) for size in sizes]
        resampled_model = [g[i] for g, i in zip(model_groups, picks)]
        resampled_baseline = [g[i] for g, i in zip(baseline_groups, picks)]
        diffs[b] = statistic(*resampled_model) - statistic(*resampled_baseline)
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    separately = " (each group resampled separately)" if len(sizes) > 1 else ""
    return {
        "diff": float(statistic(*model_groups) - statistic(*baseline_groups)),
        "low": float(low),
        "high": float(high),
        "method": f"percentile bootstrap over test examples{separately}, {n_boot} resamples",
        "n": int(sum(sizes)),
        "level": level,
    }
