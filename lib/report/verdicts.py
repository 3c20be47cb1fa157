"""Which differences between models are real: per-seed comparisons and the rule that decided.

    from lib.report.verdicts import compare, best_and_ties, RULE_TEXT
    r = compare(raw, ("none", "oe"), ("none", "baseline"), metric="auroc", set="gaussian", score="msp")
    r["diff"], r["verdict"], r["rule"]     # 0.012, "higher" | "lower" | "within noise" | "untested", "paired"
    RULE_TEXT[r["rule"]]                   # the sentence that explains the rule in the page

`raw` is a long table (lib.report.context.read_long_table): one value per model and seed.
"""
import numpy as np

from lib.evaluate.stats import paired_difference_ci


def per_seed(raw, augment, oe, **key):
    rows = raw[(raw["augment"] == augment) & (raw["oe"] == oe)]
    for k, v in key.items():
        rows = rows[rows[k] == v]
    return rows.groupby("seed")["value"].mean().dropna()


def compare(raw, model, other, **key):
    """model - other on the rows matching `key`: diff, verdict and the rule that decided it.

    verdict is "higher", "lower", "within noise" or "untested" (one seed: no noise estimate).
    Seeds in common (n >= 2): the 95% paired t interval (lib.evaluate.stats) must exclude zero. Only
    unpaired seeds but n >= 2 on both sides: the mean ± std ranges must not overlap.
    """
    a, b = per_seed(raw, *model, **key), per_seed(raw, *other, **key)
    if a.empty or b.empty:
        return None
    diff = float(a.mean() - b.mean())
    common = a.index.intersection(b.index)
    if len(common) >= 2:
        ci = paired_difference_ci(a[common].to_numpy(), b[common].to_numpy())
        verdict = "higher" if ci["low"] > 0 else "lower" if ci["high"] < 0 else "within noise"
        return {"diff": diff, "verdict": verdict, "rule": "paired", "n": len(common)}
    if len(a) >= 2 and len(b) >= 2:
        apart = a.mean() - a.std() > b.mean() + b.std() or b.mean() - b.std() > a.mean() + a.std()
        verdict = ("higher" if diff > 0 else "lower") if apart else "within noise"
        return {"diff": diff, "verdict": verdict, "rule": "overlap", "n": min(len(a), len(b))}
    return {"diff": diff, "verdict": "untested", "rule": "single", "n": 1}


RULE_TEXT = {
    "paired": "A difference counts as real when the 95% paired t interval of the per-seed differences "
              "(each seed against the same seed of the other model, lib.evaluate.stats.paired_difference_ci) "
              "excludes zero; otherwise it is called within noise.",
    "overlap": "Where models share too few seeds to pair, a difference counts as real when the ranges "
               "mean ± std (over seeds) of the two models do not overlap.",
    "single": "With one seed per model there is no estimate of seed-to-seed variation: the reading "
              "ranks models by the measured values and calls no difference real or noise. "
              "Run more seeds to test the differences.",
}


def best_and_ties(raw, summary, models, **key):
    """The best model by mean (higher is better), its mean, and the others within noise of it."""
    means = {}
    for m in models:
        rows = summary[(summary["augment"] == m[0]) & (summary["oe"] == m[1])]
        for k, v in key.items():
            rows = rows[rows[k] == v]
        if not rows.empty and not np.isnan(rows["mean"].iloc[0]):
            means[m] = float(rows["mean"].iloc[0])
    if not means:
        return None
    best = max(means, key=means.get)
    results = {m: compare(raw, best, m, **key) for m in means if m != best}
    ties = [m for m, r in results.items() if r and r["verdict"] == "within noise"]
    worst = min(means, key=means.get)
    return {"best": best, "mean": means[best], "means": means, "ties": ties, "worst": worst,
            "rules": {r["rule"] for r in results.values() if r}}

