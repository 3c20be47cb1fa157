"""Which differences between models are real, as the differences step decided them.

    from lib.report.verdicts import read_differences, compare, best_and_ties, RULE_TEXT
    diff = read_differences("results/tables/differences.csv")   # a DataFrame, or None without the file
    r = compare(diff, "summary/auroc_oe", ("none", "oe"), ("none", "baseline"), metric="auroc", set="gaussian",
                score="msp")
    r["diff"], r["verdict"], r["rule"]     # 0.012, "higher" | "lower" | "within noise" | "untested", "tested"
    RULE_TEXT[r["rule"]]                   # the sentence that explains the rule in the page

differences.csv (lib.evaluate.differences) holds every comparison a sentence of the summary
makes, in the family of that sentence, with its verdict after Holm's correction over the
family and the smallest-detectable-difference rule. Nothing here tests anything again: the
page says what the file says. "higher"/"lower" is a difference beyond noise (model above or
below its reference); "untested": one seed, no seed-to-seed spread to test against.
"""
import numpy as np
import pandas as pd

from lib.evaluate.differences import BEYOND, UNTESTED, WITHIN


def read_differences(path):
    """differences.csv with `score` as text ("" where empty), or None when `path` is None."""
    if path is None:
        return None
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"score": str})
    return df.assign(score=df["score"].fillna(""))


def _rows(diff, family, **key):
    rows = diff[diff["family"] == family]
    for column, value in key.items():
        rows = rows[rows[column] == value]
    return rows


def _result(row):
    if row["verdict"] == BEYOND:
        verdict = "higher" if row["diff"] > 0 else "lower"
    else:
        verdict = {WITHIN: "within noise", UNTESTED: "untested"}[row["verdict"]]
    return {"diff": float(row["diff"]), "verdict": verdict, "rule": "single" if verdict == "untested" else "tested",
            "reference": (row["ref_augment"], row["ref_oe"]), "p_holm": float(row["p_holm"])}


def _measured(raw, model, reference, **key):
    """The mean difference of the measured values, untested (no differences.csv to read)."""
    means = []
    for augment, oe in (model, reference):
        rows = raw[(raw["augment"] == augment) & (raw["oe"] == oe)]
        for k, v in key.items():
            rows = rows[rows[k] == v]
        means.append(rows["value"].mean())
    if np.isnan(means).any():
        return None
    return {"diff": float(means[0] - means[1]), "verdict": "untested", "rule": "absent", "reference": reference,
            "p_holm": float("nan")}


def compare(diff, family, model, reference, raw=None, **key):
    """model - reference in `family` on the rows matching `key`: diff, verdict and the rule
    that decided it. Without differences.csv (diff None): the measured difference from the long
    table `raw`, untested; None when neither has the pair."""
    if diff is None:
        return _measured(raw, model, reference, **key) if raw is not None else None
    rows = _rows(diff, family, augment=model[0], oe=model[1], ref_augment=reference[0], ref_oe=reference[1], **key)
    return _result(rows.iloc[0]) if len(rows) else None


RULE_TEXT = {
    "tested": "A difference counts as real (beyond noise) when its Holm-adjusted p-value, over the comparisons "
              "the sentence draws on, is below 0.05 and it is at least the smallest difference the study can "
              "detect (shown under the tables); otherwise it is within noise. Intervals and p-values come from "
              "a two-level bootstrap over seeds and test images (lib.evaluate.differences).",
    "single": "With one seed per model there is no estimate of seed-to-seed variation: the reading "
              "ranks models by the measured values and calls no difference real or noise. "
              "Run more seeds to test the differences.",
    "absent": "results/tables/differences.csv is absent, so no difference is tested: the reading ranks "
              "models by the measured values alone.",
}


def best_and_ties(diff, family, summary, models, **key):
    """The best model (the reference of `family`'s rows, which the differences step chose as the
    highest mean; by mean when differences.csv is absent), its mean, and the others within noise of it."""
    means = {}
    for m in models:
        rows = summary[(summary["augment"] == m[0]) & (summary["oe"] == m[1])]
        for k, v in key.items():
            rows = rows[rows[k] == v]
        if not rows.empty and not np.isnan(rows["mean"].iloc[0]):
            means[m] = float(rows["mean"].iloc[0])
    if not means:
        return None
    rows = _rows(diff, family, **key) if diff is not None else pd.DataFrame()
    results = {(r["augment"], r["oe"]): _result(r) for _, r in rows.iterrows()}
    best = results[next(iter(results))]["reference"] if results else max(means, key=means.get)
    if best not in means:
        return None
    ties = [m for m, r in results.items() if r["verdict"] == "within noise"]
    worst = min(means, key=means.get)
    rules = {r["rule"] for r in results.values()} or ({"absent"} if len(means) > 1 else set())
    return {"best": best, "mean": means[best], "means": means, "ties": ties, "worst": worst, "rules": rules}
