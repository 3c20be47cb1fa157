"""The report's evaluation section: scores, set sizes, calibration, reliability, differences.

    from lib.report.evaluation import evaluation_section
    section = evaluation_section("results/tables", cfg)   # a dict for the Jinja2 template
    section["calibration"]["rows"][0]["cells"][0]        # {"text", "value", "source"}
    section["reliability"][0]["png"]                     # base64 PNG of the diagrams of one set

Reads only the CSVs under results/tables (detection, calibration, reliability,
differences); a table that is missing leaves its part out (None or []). Every cell carries
its exact value and the CSV it came from (`data-value`, `data-source` in the template).
Test sets seen in training (`leaks`, {set: why}) carry lib.report.cells's leak mark.

In the page: build(ctx), the section "evaluation" of lib.report.render.SECTIONS.
"""
import base64
import io
import os

import numpy as np
import pandas as pd
from markupsafe import Markup

from lib import layout
from lib.config import EXTENSION_NAMES
from lib.evaluate.scores import SCORE_FUNCTIONS, SCORE_INPUTS
from lib.evaluate.aggregate import summarize
from lib.evaluate.differences import ALPHA, FAMILIES, POWER, headline_score
from lib.evaluate.ranks import COMPARISONS
from lib.report.cells import LEAK_MARK, key_text, model_label, set_label
from lib.report.context import input_file, shown_path
from lib.report.statistics import METHOD_PARAGRAPH, METRIC_NAMES, SET_NAMES, detectable_block, rank_figures

SCORES = [
    dict(name="msp", label="MSP", needs="logits", formula="−max<sub>c</sub> softmax(z)<sub>c</sub>",
         source="Hendrycks & Gimpel 2017, “A Baseline for Detecting Misclassified and Out-of-Distribution Examples”"),
    dict(name="xent", label="cross-entropy", needs="logits",
         formula="mean<sub>c</sub>(z<sub>c</sub>) − logsumexp(z) = −H(U, softmax(z)), at most −log C (flat logits)",
         source="Hendrycks, Mazeika & Dietterich 2019, “Deep Anomaly Detection with Outlier Exposure”"),
    dict(name="energy", label="energy", needs="logits", formula="−logsumexp(z) (free energy, T = 1)",
         source="Liu, Wang, Owens & Li 2020, “Energy-based Out-of-distribution Detection”"),
    dict(name="maxlogit", label="max logit", needs="logits", formula="−max<sub>c</sub> z<sub>c</sub>",
         source="Hendrycks et al. 2022, “Scaling Out-of-Distribution Detection for Real-World Settings”"),
    dict(name="odin", label="ODIN", needs="ODIN logits (input gradient, in the evaluate job)",
         formula="−max<sub>c</sub> softmax(f(x̃) / T)<sub>c</sub>, x̃ = x − ε sign(−∇<sub>x</sub> log max<sub>c</sub> "
                 "softmax(f(x) / T)<sub>c</sub>), T = 1000, ε = 0.0014 unless tuned (hyperparameter table)",
         source="Liang, Li & Srikant 2018, “Enhancing the Reliability of Out-of-distribution Image Detection "
                "in Neural Networks”"),
    dict(name="mahalanobis", label="Mahalanobis", needs="penultimate features + training-split fit",
         formula="min<sub>c</sub> (f − μ<sub>c</sub>)<sup>T</sup> Σ<sup>+</sup> (f − μ<sub>c</sub>), class means "
                 "μ<sub>c</sub> and one shared covariance Σ of the training split's features",
         source="Lee, Lee, Lee & Shin 2018, “A Simple Unified Framework for Detecting Out-of-Distribution "
                "Samples and Adversarial Attacks” (penultimate layer only, no input preprocessing)"),
    dict(name="knn", label="kNN", needs="penultimate features + training-split features",
         formula="‖f′ − f′<sub>(k)</sub>‖, f′ = f / ‖f‖, f′<sub>(k)</sub> the k-th nearest normalised training "
                 "feature (exact), k = 50 unless tuned",
         source="Sun, Ming, Zhu & Li 2022, “Out-of-Distribution Detection with Deep Nearest Neighbors”"),
    dict(name="vim", label="ViM", needs="penultimate features + head (W, b) + training-split fit",
         formula="α ‖(f − u) R‖ − logsumexp(z), u = −W<sup>+</sup>b, R the complement of the D-dimensional "
                 "principal subspace of the training features centred at u, α = mean max logit / mean residual "
                 "(training split); D = N/2 for N < 768 features unless tuned",
         source="Wang, Li, Feng & Zhang 2022, “ViM: Out-Of-Distribution with Virtual-logit Matching”"),
    dict(name="react", label="ReAct", needs="penultimate features + head (W, b) + training-split percentile",
         formula="−logsumexp(W min(f, c) + b), c the 90th percentile (unless tuned) of all training "
                 "activations, units pooled",
         source="Sun, Guo & Li 2021, “ReAct: Out-of-distribution Detection With Rectified Activations”"),
    dict(name="gen", label="GEN", needs="logits",
         formula="Σ<sub>top M</sub> p<sub>c</sub><sup>γ</sup> (1 − p<sub>c</sub>)<sup>γ</sup>, p = softmax(z), "
                 "γ = 0.1, M = all classes",
         source="Liu, Lochman & Zach 2023, “GEN: Pushing the Limits of Softmax-Based Out-of-Distribution "
                "Detection”"),
]
SCORE_LABELS = {s["name"]: s["label"] for s in SCORES}
SET_LABELS = {"id_test": "ID test", "mnist_c": "MNIST-C, mean over corruptions",
              "mnist_c_pooled": "MNIST-C, all corruptions pooled"}
VARIANT_LABELS = {"uncalibrated": "uncalibrated", "temperature_scaled": "temperature-scaled"}
# (metric, column title, shown in percent)
CALIBRATION_COLUMNS = [("accuracy", "accuracy (%)", True), ("ece", "ECE (%)", True), ("rms", "RMS (%)", True),
                       ("brier", "Brier", False), ("nll", "NLL", False)]
METRIC_LABELS = METRIC_NAMES


def _read(tables_dir, name):
    path = os.path.join(tables_dir, f"{name}.csv")
    if not os.path.exists(path):
        return None, path
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"score": str})
    if "score" in df:
        df["score"] = df["score"].fillna("")
    return df, path


def summary_text(mean, std, n, percent):
    """'1.23 ± 0.45 (n=3)', or without ± for one seed; '—' for no value."""
    if mean is None or not np.isfinite(mean):
        return "—"
    scale, digits = (100.0, 2) if percent else (1.0, 4)
    text = f"{mean * scale:.{digits}f}"
    if n > 1 and np.isfinite(std):
        text += f" ± {std * scale:.{digits}f}"
    return text + f" (n={int(n)})"


def _summary_cell(summary, source, percent, **key):
    rows = summary
    for k, v in key.items():
        rows = rows[rows[k] == v]
    scale = 100 if percent else 1
    if rows.empty:
        return {"text": "—", "value": "", "source": source, "key": key_text(**key), "scale": scale, "n": ""}
    r = rows.iloc[0]
    return {"text": summary_text(r["mean"], r["std"], r["n"], percent), "value": repr(float(r["mean"])),
            "source": source, "key": key_text(**key), "scale": scale, "n": int(r["n"])}


def score_table(cfg):
    """Formula (HTML with sub/superscripts), inputs and source of every score the study computes;
    a score of an extension file shows its function's first docstring line and the file."""
    rows = [{**s, "formula": Markup(s["formula"])} for s in SCORES if s["name"] in cfg["scores"]]
    for name in cfg["scores"]:
        if name in SCORE_FUNCTIONS:
            doc = (SCORE_FUNCTIONS[name].__doc__ or "").strip().splitlines()
            rows.append(dict(name=name, label=name, needs=SCORE_INPUTS[name],
                             formula=Markup.escape(doc[0] if doc else "—"),
                             source=f"extension {EXTENSION_NAMES['scores'][name]}"))
    return rows


def set_sizes(det, source, leaks=()):
    """n_id and n_ood per OOD set, flagged where they differ (AUPR depends on the ratio)."""
    if det is None:
        return []
    rows = []
    for ood_set in det["set"].unique():
        sub = det[det["set"] == ood_set]
        n_id = sub.loc[sub["metric"] == "n_id", "value"]
        n_ood = sub.loc[sub["metric"] == "n_ood", "value"]
        if n_id.empty or n_ood.empty:
            continue
        a, b = int(n_id.iloc[0]), int(n_ood.iloc[0])
        rows.append({"set": ood_set, "label": set_label(ood_set, leaks), "n_id": a, "n_ood": b, "differ": a != b,
                     "source": source, "ratio": f"{b / a:.2f}"})
    return rows


def calibration_table(cal, source):
    """Rows model x (uncalibrated, temperature-scaled); columns set x metric, plus T."""
    if cal is None or cal.empty:
        return None
    summary = summarize(cal)
    sets = [s for s in ("id_test", "mnist_c", "mnist_c_pooled") if (cal["set"] == s).any()]
    header = [(SET_LABELS[s], title) for s in sets for _, title, _ in CALIBRATION_COLUMNS]
    rows = []
    for augment, oe in cal[["augment", "oe"]].drop_duplicates().itertuples(index=False):
        for variant in ("uncalibrated", "temperature_scaled"):
            cells = [_summary_cell(summary, source, percent, augment=augment, oe=oe, metric=metric, set=s,
                                   score=variant)
                     for s in sets for metric, _, percent in CALIBRATION_COLUMNS]
            if variant == "temperature_scaled":
                t = _summary_cell(summary, source, False, augment=augment, oe=oe, metric="temperature",
                                  set="id_val", score=variant)
            else:
                t = {"text": "1 (unscaled)", "value": "", "source": "", "key": ""}  # by definition, not a number of the file
            rows.append({"label": f"{model_label(augment, oe)}, {VARIANT_LABELS[variant]}", "temperature": t,
                         "cells": cells})
    return {"sets": [SET_LABELS[s] for s in sets], "columns": [title for _, title, _ in CALIBRATION_COLUMNS],
            "header": header, "rows": rows}


def pooled_bins(rel, set_name, variant, augment, oe):
    """Bins of one model pooled over seeds: bin_low, bin_high, count, mean_confidence, accuracy."""
    sub = rel[(rel["set"] == set_name) & (rel["score"] == variant) & (rel["augment"] == augment) & (rel["oe"] == oe)]
    wide = sub.set_index(["seed", "bin", "bin_low", "bin_high", "metric"])["value"].unstack("metric").reset_index()
    wide = wide.fillna({"mean_confidence": 0.0, "accuracy": 0.0})
    wide["confidence_sum"] = wide["mean_confidence"] * wide["count"]
    wide["correct_sum"] = wide["accuracy"] * wide["count"]
    pooled = wide.groupby(["bin", "bin_low", "bin_high"], as_index=False)[["count", "confidence_sum", "correct_sum"]].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled["mean_confidence"] = pooled["confidence_sum"] / pooled["count"]
        pooled["accuracy"] = pooled["correct_sum"] / pooled["count"]
    return pooled.sort_values("bin").reset_index(drop=True)


def _png_base64(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def reliability_figures(rel, source):
    """One figure per set: a reliability diagram per model, before and after scaling."""
    if rel is None or rel.empty:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figures = []
    models = list(rel[["augment", "oe"]].drop_duplicates().itertuples(index=False))
    for set_name in [s for s in ("id_test", "mnist_c_pooled") if (rel["set"] == s).any()]:
        ncols = min(len(models), 3)
        nrows = -(-len(models) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False,
                                 layout="constrained")
        for i, (ax, (augment, oe)) in enumerate(zip(axes.flat, models)):
            before = pooled_bins(rel, set_name, "uncalibrated", augment, oe)
            filled = before["count"] > 0
            ax.bar(before["bin_low"][filled], before["accuracy"][filled],
                   width=(before["bin_high"] - before["bin_low"])[filled], align="edge", color="#4477aa",
                   alpha=0.55, edgecolor="k", linewidth=0.3, label=VARIANT_LABELS["uncalibrated"])
            after = pooled_bins(rel, set_name, "temperature_scaled", augment, oe)
            filled = after["count"] > 0
            # After scaling: accuracy against the bin's mean confidence, so the gap to the diagonal is the error.
            ax.plot(after["mean_confidence"][filled], after["accuracy"][filled], "o-", color="#cc3311",
                    markersize=3, linewidth=1, label=VARIANT_LABELS["temperature_scaled"])
            ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence")
            ax.set_title(model_label(augment, oe), fontsize=9)
            if i % ncols == 0:
                ax.set_ylabel("accuracy")
        for ax in list(axes.flat)[len(models):]:
            ax.axis("off")
        axes.flat[0].legend(loc="upper left", fontsize=7)
        fig.suptitle(f"Reliability, {SET_LABELS[set_name]} (15 equal-width bins, all seeds pooled)", fontsize=9)
        figures.append({"set": set_name, "title": SET_LABELS[set_name], "png": _png_base64(fig), "source": source})
        plt.close(fig)
    return figures


def p_text(p):
    """A p-value as the table shows it: three decimals, or '< 0.001'."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _number(value, text, source, key, scale=1):
    return {"text": text, "value": repr(float(value)), "source": source, "key": key, "scale": scale}


def differences_table(diff, source, leaks=()):
    """The table's rows of differences.csv (every model against Base, families table/<metric>), in
    percentage points: interval, raw and Holm-adjusted p, verdict, seeds and test images."""
    if diff is None or diff.empty:
        return None
    table = diff[diff["family"].str.startswith("table/")]
    if table.empty:
        return None
    rows = []
    for r in table.itertuples(index=False):
        row_key = key_text(family=r.family, augment=r.augment, oe=r.oe, metric=r.metric, set=r.set, score=r.score or "")
        shown_set = SET_LABELS.get(r.set, set_label(r.set, leaks))
        score = SCORE_LABELS.get(r.score, VARIANT_LABELS.get(r.score, r.score))
        rows.append({"model": model_label(r.augment, r.oe), "metric": METRIC_LABELS.get(r.metric, r.metric),
                     "set": shown_set, "score": score or "",
                     "diff": _number(r.diff, f"{r.diff * 100:+.2f}", source, f"{row_key};column=diff", 100),
                     "interval": {"text": f"[{r.low * 100:+.2f}, {r.high * 100:+.2f}]", "value": f"{r.low!r},{r.high!r}",
                                  "source": source, "key": f"{row_key};column=low,high", "scale": 100},
                     "p": _number(r.p, p_text(r.p), source, f"{row_key};column=p"),
                     "p_holm": _number(r.p_holm, p_text(r.p_holm), source, f"{row_key};column=p_holm"),
                     "verdict": r.verdict, "beyond": r.verdict == "beyond noise",
                     "n_seeds": _number(r.n_seeds, str(int(r.n_seeds)), source, f"{row_key};column=n_seeds"),
                     "n_examples": _number(r.n_examples, str(int(r.n_examples)), source,
                                           f"{row_key};column=n_examples"),
                     "method": r.method, "origin": r.source})
    families = [{"name": f, "size": int(part["family_size"].iloc[0]), "text": FAMILIES[f]}
                for f, part in table.groupby("family", sort=False)]
    return {"rows": rows, "methods": sorted(table["method"].unique()), "families": families,
            "one_seed": bool((table["n_seeds"] < 2).all()),
            "method_paragraph": Markup(METHOD_PARAGRAPH.format(n_boot=int(table["n_boot"].iloc[0]), alpha=ALPHA,
                                                               power=POWER))}


def rank_item_label(item):
    """A model ('pixmix/oe') or a score ('msp') of ranks.csv as the page names it."""
    return model_label(*item.split("/", 1)) if "/" in item else SCORE_LABELS.get(item, item)


def evaluation_section(tables_dir, cfg, leaks=None, shown_tables=None):
    """Everything the template's evaluation section shows, from the CSVs in `tables_dir`.

    `shown_tables`: the folder as the page names it in data-source (default `tables_dir`)."""
    leaks = leaks or {}
    names = ("detection", "calibration", "reliability", "differences", "detectable", "ranks")
    frames = {name: _read(tables_dir, name)[0] for name in names}
    src = {name: os.path.join(shown_tables or tables_dir, f"{name}.csv") for name in frames}
    sizes = set_sizes(frames["detection"], src["detection"], leaks)
    differences = differences_table(frames["differences"], src["differences"], leaks)
    detectable = detectable_block(frames["detectable"], frames["differences"], src["detectable"],
                                  lambda metric, s: f"{METRIC_NAMES.get(metric, metric)}, "
                                                    f"{SET_NAMES.get(s, set_label(s, leaks))}")
    score = SCORE_LABELS.get(headline_score(cfg["scores"]), "")
    titles = {name: text.format(score=score) for name, text in COMPARISONS.items()}
    ranks = rank_figures(frames["ranks"], src["ranks"], rank_item_label, titles)
    shown_sets = {r["set"] for r in sizes} | (set(frames["differences"]["set"]) if differences else set())
    return {"scores": score_table(cfg), "sizes": sizes,
            "calibration": calibration_table(frames["calibration"], src["calibration"]),
            "reliability": reliability_figures(frames["reliability"], src["reliability"]),
            "differences": differences, "detectable": detectable, "ranks": ranks,
            "leaks": {name: why for name, why in leaks.items() if name in shown_sets}, "leak_mark": LEAK_MARK}


def build(ctx):
    """The section's data from the declared detection, calibration, reliability, differences,
    detectable and ranks tables."""
    tables_dir = layout.tables_dir(ctx["results"])
    # evaluation_section opens the folder's tables by name: each one must be a declared input.
    for name in ("detection", "calibration", "reliability", "differences", "detectable", "ranks"):
        input_file(ctx, name, layout.table_file(f"{name}.csv", ctx["results"]))
    return evaluation_section(tables_dir, ctx["cfg"], ctx["leaks"], shown_path(ctx, tables_dir))
