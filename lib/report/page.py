"""Render results/report.html from the workflow's tables, logs and logits (one self-contained file).

    python -m lib.report.page --results results --config-json "$CFG" \
        --template workflow/templates/report.html.j2 --out results/report.html

    from lib.report.page import render
    html = render("results/tables", "results/models", cfg, "workflow/templates/report.html.j2", repo=".")

The page is a list of sections (SECTIONS). Each section has a builder, a function of the
report context that returns the section's data, or None when its inputs are not in this
run; the template then shows the section's `missing` note instead. A topic adds or
replaces sections from its own module, lib/report_<topic>.py, with a list of section()
entries named REPORT_SECTIONS, plus a partial under workflow/templates/:

    # lib/report_<topic>.py
    from lib.report.page import long_table, section
    def topic_section(ctx):
        table = long_table(ctx, "topic.csv")            # None when the file is absent
        return None if table is None else {...}
    REPORT_SECTIONS = [section("topic", "The topic", topic_section, "sections/topic.html.j2",
                               "No topic results in this run.", after="detection")]

The plug-ins in use: lib/report/robustness.py (replaces the built-in robustness tables),
lib/report/evaluation.py (replaces calibration: scores, set sizes, calibration,
differences) and lib/report/augment_samples.py (augmentation samples, after training). Test sets
seen in training (read_leaks) carry LEAK_MARK wherever a table row or figure names them.

Every number in a table cell carries `data-value` (the exact number), `data-source` (the
file it came from, relative to the run's working directory), `data-key` (which row of that
file: for long tables augment;oe;metric;set;score) and `data-scale` (displayed = value x
scale), so a reader or a test can trace each number back to a file.
"""
import argparse
import datetime
import functools
import glob
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

import jinja2
import markupsafe
import numpy as np
import pandas as pd

from lib import layout
from lib.report import published
from lib.report.citations import missing_cited_files
from lib.evaluate.aggregate import summarize
from lib.common import load_npz, sha256_file, write_text_atomic
from lib.data.leaks import leaked_sets
from lib.evaluate.scores import SCORE_INPUTS, compute_score
from lib.evaluate.stats import paired_difference_ci

AUGMENT_LABELS = {"none": "Base", "saltpepper": "S&P", "pixmix": "PixMix"}
OE_LABELS = {"baseline": "", "oe": "+OE", "oe_tune": "+OE tune"}
SCORE_LABELS = {"msp": "MSP", "xent": "cross-entropy", "energy": "energy", "maxlogit": "max logit",
                "odin": "ODIN", "mahalanobis": "Mahalanobis"}
DETECTION_TABLES = (("auroc", "AUROC"), ("aupr_in", "AUPR-in"), ("aupr_out", "AUPR-out"),
                    ("fpr95", "FPR at 95% TPR"))
# Metrics that are fractions and shown as percentages; any other metric is shown as is.
PERCENT_METRICS = {"accuracy", "error", "auroc", "aupr_in", "aupr_out", "fpr95", "mean_accuracy",
                   "non_overlap_mean", "mce", "ece", "rms_calibration_error", "rms"}
METRIC_LABELS = {"accuracy": "accuracy", "nll": "NLL", "auroc": "AUROC", "aupr_in": "AUPR-in",
                 "aupr_out": "AUPR-out", "fpr95": "FPR95", "mean_accuracy": "mean accuracy",
                 "non_overlap_mean": "overlap-aware mean accuracy", "mce": "mCE", "ece": "ECE",
                 "rms_calibration_error": "RMS calibration error", "brier": "Brier score"}
SUMMARY_KEYS = ("augment", "oe", "metric", "set", "score")
# The study's MNIST-C row: this metric of results/tables/robustness_summary.csv (long format,
# one row per model and seed; mean accuracy over the corruptions).
MNIST_C_TABLE, MNIST_C_METRIC = "robustness_summary.csv", "mean_accuracy"
HEADLINE_SCORE = "msp"
LEAK_MARK = "†"  # dagger after a test set that was seen in training


# ---- labels and cells -----------------------------------------------------------------


def model_label(augment, oe):
    return (AUGMENT_LABELS.get(augment, augment) + " " + OE_LABELS.get(oe, oe)).strip()


def read_leaks(tables_dir, cfg):
    """{set: reason} of test sets seen in training, from results/tables/leaks.json (the
    leak_marks rule's output), else worked out from the config."""
    path = os.path.join(tables_dir, "leaks.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)["seen_in_training"]
    return leaked_sets(cfg)


def set_label(name, leaks):
    return f"{name} {LEAK_MARK}" if name in leaks else name


def fmt_cell(mean, std, n, percent=True):
    """'99.12 ± 0.31 (n=3)'; a single seed has no std, shown as '99.12 (n=1)'."""
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "—"
    scale = 100.0 if percent else 1.0
    text = f"{mean * scale:.2f}"
    if n and n > 1 and std is not None and not np.isnan(std):
        text += f" ± {std * scale:.2f}"
    return text + f" (n={int(n)})"


def key_text(**key):
    """The data-key of a cell: 'augment=none;oe=baseline;metric=auroc;set=gaussian;score=msp'."""
    return ";".join(f"{k}={v}" for k, v in key.items())


def parse_key(text):
    return dict(part.split("=", 1) for part in text.split(";")) if text else {}


def _pub(value, percent):
    if value is None:
        return ""
    return f"{value * (100 if percent else 1):.2f}"


def cell(summary, source, percent=True, published_value=None, **key):
    """One summarised number (mean ± std, n over seeds) where `summary` matches every `key`."""
    rows = summary
    for k, v in key.items():
        rows = rows[rows[k] == v]
    scale = 100 if percent else 1
    if rows.empty:
        return {"text": "—", "value": "", "std": "", "n": "", "scale": scale, "key": key_text(**key),
                "source": source, "published": _pub(published_value, percent), "delta": ""}
    r = rows.iloc[0]
    delta = ""
    if published_value is not None and not np.isnan(r["mean"]):
        delta = f"{(r['mean'] - published_value) * scale:+.2f}"
    return {"text": fmt_cell(r["mean"], r["std"], r["n"], percent), "value": repr(float(r["mean"])),
            "std": "" if np.isnan(r["std"]) else repr(float(r["std"])), "n": int(r["n"]), "scale": scale,
            "key": key_text(**{k: r[k] for k in SUMMARY_KEYS}), "source": source,
            "published": _pub(published_value, percent), "delta": delta}


def plain_cell(value, text, source, key):
    """A number from a file that is not a long table (train logs, benchmarks), shown as `text`."""
    return {"text": text, "value": repr(float(value)), "std": "", "n": "", "scale": 1, "key": key,
            "source": source, "published": "", "delta": ""}


# ---- inputs ---------------------------------------------------------------------------


def make_context(cfg, results_dir, tables_dir=None, models_dir=None, repo="."):
    """Where the report reads from. Paths shown in the page are relative to the folder
    that holds results/, the run's working directory."""
    results_dir = os.path.abspath(results_dir)
    return {"cfg": cfg, "repo": repo, "results": results_dir, "workdir": os.path.dirname(results_dir),
            "tables": os.path.abspath(tables_dir or layout.tables_dir(results_dir)),
            "models": os.path.abspath(models_dir or layout.models_dir(results_dir)),
            "logits": layout.logits_root(results_dir), "data": layout.data_dir(results_dir),
            "benchmarks": layout.benchmarks_dir(results_dir), "_long": {}}


def shown_path(ctx, path):
    """`path` as the page shows it: relative to the run's working directory."""
    return os.path.relpath(os.path.abspath(path), ctx["workdir"])


def read_long_table(path):
    """A long-format table (augment, oe, seed, metric, set, score, value, source).

    Empty `set`/`score` stay empty strings; a set literally called "NA" stays a name."""
    df = pd.read_csv(path, keep_default_na=False, na_values={"value": [""]})
    missing = [c for c in ("augment", "oe", "seed", "metric", "value") if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks the long-format columns {missing}; it should have "
                         f"augment, oe, seed, metric, set, score, value, source. Rerun the rule that writes it.")
    for column in ("set", "score"):
        df[column] = df[column].astype(str) if column in df.columns else ""
    df["value"] = df["value"].astype(float)
    return df


def long_table(ctx, name):
    """{"raw", "summary", "source"} of results/tables/<name>, or None when the file is absent."""
    if name not in ctx["_long"]:
        path = os.path.join(ctx["tables"], name)
        ctx["_long"][name] = None
        if os.path.exists(path):
            raw = read_long_table(path)
            ctx["_long"][name] = {"raw": raw, "summary": summarize(raw), "source": shown_path(ctx, path)}
    return ctx["_long"][name]


def grid_columns(cfg):
    return [(a, o) for a in cfg["augment"] for o in cfg["oe"]]


def model_dir(ctx, augment, oe, seed):
    return os.path.join(ctx["models"], layout.model_part(augment, oe, seed))


# ---- the reading: which method wins where, and which differences are noise -------------


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


def _points(x):
    return f"{x * 100:+.2f} points"


def _verdict_phrase(result):
    if result["verdict"] == "untested":
        return ""
    if result["verdict"] == "within noise":
        return " (within noise)"
    return " (beyond noise)"


def _join(items):
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _best_and_ties(raw, summary, models, **key):
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


def summary_reading(cfg, acc, det, leaks=()):
    """One paragraph, as a list of sentences, read off the numbers; and the rules it used.

    `acc` and `det` are long_table() results (raw + summary) or None; sets in `leaks` carry
    the leak mark.
    """
    sentences, rules = [], set()
    models = grid_columns(cfg)
    id_name = cfg["in_distribution"]
    if acc is not None:
        r = _best_and_ties(acc["raw"], acc["summary"], models, metric="accuracy", set="id_test")
        if r:
            rules |= r["rules"]
            text = (f"On the {id_name} test set {model_label(*r['best'])} is the most accurate "
                    f"({r['mean'] * 100:.2f}%)")
            if r["worst"] != r["best"]:
                text += f" and {model_label(*r['worst'])} the least ({r['means'][r['worst']] * 100:.2f}%)"
            if "single" not in r["rules"] and len(r["means"]) > 1:
                text += ("; within noise of the best: " + _join(model_label(*m) for m in r["ties"])
                         if r["ties"] else "; every other model is below it beyond noise")
            sentences.append(text + ".")
    scores = [s for s in cfg["scores"] if s == HEADLINE_SCORE] or list(cfg["scores"][:1])
    if det is not None and scores:
        score = scores[0]
        label = SCORE_LABELS.get(score, score)
        per_set, set_means = [], {}
        for ood in cfg["ood_sets"]:
            r = _best_and_ties(det["raw"], det["summary"], models, metric="auroc", set=ood, score=score)
            if not r:
                continue
            rules |= r["rules"]
            set_means[ood] = float(np.mean(list(r["means"].values())))
            tie = f", tied within noise with {_join(model_label(*m) for m in r['ties'])}" if r["ties"] else ""
            per_set.append(f"on {set_label(ood, leaks)} by {model_label(*r['best'])} ({r['mean'] * 100:.2f}%{tie})")
        if per_set:
            sentences.append(f"The best {label} AUROC is reached " + "; ".join(per_set) + ".")
        if len(set_means) > 1:
            hardest, easiest = min(set_means, key=set_means.get), max(set_means, key=set_means.get)
            sentences.append(f"The hardest OOD set is {set_label(hardest, leaks)} (mean {label} AUROC over the models "
                             f"{set_means[hardest] * 100:.2f}%), the easiest {set_label(easiest, leaks)} ({set_means[easiest] * 100:.2f}%).")
        effect = []
        for augment in cfg["augment"]:
            if "baseline" not in cfg["oe"]:
                break
            for oe in [o for o in cfg["oe"] if o != "baseline"]:
                results = [compare(det["raw"], (augment, oe), (augment, "baseline"), metric="auroc", set=ood, score=score)
                           for ood in cfg["ood_sets"]]
                results = [x for x in results if x]
                if not results:
                    continue
                rules |= {x["rule"] for x in results}
                up = sum(x["verdict"] == "higher" for x in results)
                down = sum(x["verdict"] == "lower" for x in results)
                counted = "" if any(x["verdict"] == "untested" for x in results) else \
                    f" (beyond noise up on {up}, down on {down} of {len(results)} sets)"
                name = OE_LABELS.get(oe, oe).lstrip("+")
                effect.append(f"{_points(np.mean([x['diff'] for x in results]))} with {name} for "
                              f"{AUGMENT_LABELS.get(augment, augment)}{counted}")
        if effect:
            sentences.append(f"Averaged over the OOD sets, {label} AUROC changes by " + "; ".join(effect) + ".")
    if acc is not None and "none" in cfg["augment"] and "baseline" in cfg["oe"]:
        changes = []
        for augment in [a for a in cfg["augment"] if a != "none"]:
            r = compare(acc["raw"], (augment, "baseline"), ("none", "baseline"), metric="accuracy", set="id_test")
            if r:
                rules.add(r["rule"])
                changes.append(f"{_points(r['diff'])} for {AUGMENT_LABELS.get(augment, augment)}{_verdict_phrase(r)}")
        if changes:
            sentences.append("Against Base, training augmentation changes test accuracy by " + _join(changes) + ".")
    rule_order = [k for k in ("paired", "overlap", "single") if k in rules]
    return {"sentences": sentences, "rules": [RULE_TEXT[k] for k in rule_order]}


# ---- sections ---------------------------------------------------------------------------


def study_tables(cfg, acc, det, acc_src, det_src, leaks=(), mnist_c=None):
    """The study's two tables, same shape: accuracy by augment; AUROC by set x score x model.

    `mnist_c` is the long_table() of robustness_summary.csv, or None."""
    id_name = cfg["in_distribution"]
    pub_id = "mnist" if id_name == "mnist" else None
    augments = cfg["augment"]
    acc_rows = [{"label": f"{id_name} test accuracy", "note": "", "cells": [
        cell(acc, acc_src, published_value=published.ACCURACY.get((pub_id, a)) if pub_id else None,
             augment=a, oe="baseline", metric="accuracy", set="id_test") for a in augments]}]
    # The published MNIST-C numbers are for the official files; generated corruptions show ours alone.
    official = cfg.get("corruptions", "official") == "official"
    mnist_c_pub = {a: published.ACCURACY.get(("mnist_c", a)) if pub_id and official else None for a in augments}
    if mnist_c is not None:
        on = ("the official MNIST-C test sets (Zenodo 3239543)" if official else
              f"the 15 MNIST-C corruptions generated offline from the {id_name} test set")
        acc_rows.append({"label": "MNIST-C accuracy (mean over the corruptions)", "note": f"On {on}.", "cells": [
            cell(mnist_c["summary"], mnist_c["source"], published_value=mnist_c_pub[a],
                 augment=a, oe="baseline", metric=MNIST_C_METRIC) for a in augments]})
    else:
        acc_rows.append({"label": "MNIST-C accuracy (mean over the corruptions)",
                         "note": f"Not in this run: results/tables/{MNIST_C_TABLE} is absent.",
                         "cells": [{"text": "—", "value": "", "std": "", "n": "", "scale": 100, "key": "",
                                    "source": "", "delta": "", "published": _pub(mnist_c_pub[a], True)}
                                   for a in augments]})
    columns = grid_columns(cfg)
    auroc_rows = []
    for ood in cfg["ood_sets"]:
        for score in [s for s in ("msp", "xent") if s in cfg["scores"]]:
            auroc_rows.append({"label": f"{set_label(ood, leaks)}, {SCORE_LABELS[score]}", "cells": [
                cell(det, det_src, published_value=published.AUROC.get((ood, score, a, o)) if pub_id else None,
                     augment=a, oe=o, metric="auroc", set=ood, score=score) for a, o in columns]})
    return {"accuracy_header": [AUGMENT_LABELS.get(a, a) for a in augments], "accuracy_rows": acc_rows,
            "auroc_header": [model_label(a, o) for a, o in columns], "auroc_rows": auroc_rows}


def summary_section(ctx):
    acc, det = long_table(ctx, "accuracy.csv"), long_table(ctx, "detection.csv")
    if acc is None or det is None:
        return None
    cfg = ctx["cfg"]
    study = study_tables(cfg, acc["summary"], det["summary"], acc["source"], det["source"],
                         ctx["leaks"], long_table(ctx, MNIST_C_TABLE))
    reading = summary_reading(cfg, acc, det, ctx["leaks"])
    versus = []
    for what, rows in (("accuracy", study["accuracy_rows"]), ("AUROC", study["auroc_rows"])):
        deltas = [float(c["delta"]) for row in rows for c in row["cells"] if c["delta"]]
        if deltas:
            versus.append(f"{np.mean(deltas):+.2f} points in {what} ({len(deltas)} cells)")
    if versus:
        reading["sentences"].append("Against the published study, ours differ on average by " + _join(versus) + ".")
    return {"study": study, "reading": reading, "published_shown": cfg["in_distribution"] == "mnist",
            "oe_reference": published.OE_REFERENCE}


def detection_tables(cfg, det, det_src, leaks=()):
    columns = grid_columns(cfg)
    tables = []
    for metric, title in DETECTION_TABLES:
        rows = [{"label": f"{set_label(ood, leaks)}, {SCORE_LABELS.get(score, score)}",
                 "cells": [cell(det, det_src, augment=a, oe=o, metric=metric, set=ood, score=score) for a, o in columns]}
                for ood in cfg["ood_sets"] for score in cfg["scores"]]
        tables.append({"metric": metric, "title": title, "header": [model_label(a, o) for a, o in columns], "rows": rows})
    return tables


def figure_score(cfg):
    """The score drawn in the figures: the headline MSP, else the first score computed from logits."""
    usable = [s for s in cfg["scores"] if SCORE_INPUTS.get(s) == "logits"]
    return HEADLINE_SCORE if HEADLINE_SCORE in usable else (usable[0] if usable else None)


def load_logits(path):
    return load_npz(path, required=("logits",))


def detection_figures(ctx, det_summary):
    """ROC curves per OOD set and ID-vs-OOD histograms on the hardest set, from cached logits.

    One seed per model (the first in the config): curves of different seeds would hide each
    other. Returns None when no model has its logits."""
    from lib.report import figures as report_figures  # matplotlib only when a figure is drawn

    cfg = ctx["cfg"]
    score = figure_score(cfg)
    if score is None or not cfg["seeds"]:
        return None
    seed = cfg["seeds"][0]
    curves, sources, missing = {ood: {} for ood in cfg["ood_sets"]}, [], []
    for a, o in grid_columns(cfg):
        folder = os.path.join(ctx["logits"], layout.model_part(a, o, seed))
        paths = {name: layout.npz_in(folder, name) for name in ["id_test", *cfg["ood_sets"]]}
        if not all(os.path.exists(p) for p in paths.values()):
            missing.append(model_label(a, o))
            continue
        id_scores = compute_score(score, load_logits(paths["id_test"]))
        sources.append(shown_path(ctx, folder))
        for ood in cfg["ood_sets"]:
            curves[ood][model_label(a, o)] = (id_scores, compute_score(score, load_logits(paths[ood])))
    if not sources:
        return None
    mean_auroc = {}
    for ood in cfg["ood_sets"]:
        rows = det_summary[(det_summary["metric"] == "auroc") & (det_summary["set"] == ood) &
                           (det_summary["score"] == score)] if det_summary is not None else pd.DataFrame()
        if not rows.empty:
            mean_auroc[ood] = float(rows["mean"].mean())
    hardest = min(mean_auroc, key=mean_auroc.get) if mean_auroc else cfg["ood_sets"][0]
    label = SCORE_LABELS.get(score, score)
    # Panel titles and legends name a set seen in training with its mark, as the tables do.
    leaks = ctx.get("leaks", {})
    return {"score": score, "score_label": label, "seed": seed, "sources": sources, "missing": missing,
            "hardest": hardest, "hardest_label": set_label(hardest, leaks), "hardest_auroc": mean_auroc.get(hardest),
            "roc": report_figures.roc_figure({set_label(ood, leaks): c for ood, c in curves.items()}, label),
            "histograms": report_figures.score_histograms(curves[hardest], set_label(hardest, leaks), label)}


def detection_section(ctx):
    det = long_table(ctx, "detection.csv")
    if det is None:
        return None
    return {"tables": detection_tables(ctx["cfg"], det["summary"], det["source"], ctx["leaks"]),
            "figures": detection_figures(ctx, det["summary"])}


def long_tables(ctx, name, row_keys=("set", "score"), skip_metrics=()):
    """Every metric of results/tables/<name> as one table: rows by `row_keys`, columns by model.

    The generic view of any long-format table (robustness, calibration, ...); None without
    the file."""
    table = long_table(ctx, name)
    if table is None:
        return None
    summary, columns = table["summary"], grid_columns(ctx["cfg"])
    tables = []
    for metric in [m for m in dict.fromkeys(summary["metric"]) if m not in skip_metrics]:
        part = summary[summary["metric"] == metric]
        row_values = list(dict.fromkeys(zip(*(part[k] for k in row_keys))))
        percent = metric in PERCENT_METRICS
        rows = [{"label": ", ".join(v for v in values if v) or metric,
                 "cells": [cell(part, table["source"], percent=percent, augment=a, oe=o, metric=metric,
                                **dict(zip(row_keys, values))) for a, o in columns]}
                for values in row_values]
        title = METRIC_LABELS.get(metric, metric) + (" (%)" if percent else "")
        tables.append({"metric": metric, "title": title, "row_header": " / ".join(row_keys),
                       "header": [model_label(a, o) for a, o in columns], "rows": rows})
    return {"source": table["source"], "tables": tables}


def training_runs(ctx):
    """{label: (train_log DataFrame, shown path)} for every model of the grid with a log."""
    cfg, runs = ctx["cfg"], {}
    for a, o in grid_columns(cfg):
        for s in cfg["seeds"]:
            path = os.path.join(model_dir(ctx, a, o, s), layout.TRAIN_LOG)
            if os.path.exists(path):
                runs[f"{model_label(a, o)} seed {s}"] = (pd.read_csv(path), shown_path(ctx, path))
    return runs


def training_section(ctx):
    from lib.report import figures as report_figures

    runs = training_runs(ctx)
    if not runs:
        return None
    rows = []
    for label, (log, source) in runs.items():
        last = len(log) - 1
        rows.append({"model": label, "source": source, "device": str(log["device"].iloc[-1]), "cells": [
            plain_cell(log["epoch"].iloc[-1], str(int(log["epoch"].iloc[-1])), source, f"column=epoch;row={last}"),
            plain_cell(log["loss"].iloc[-1], f"{log['loss'].iloc[-1]:.4f}", source, f"column=loss;row={last}"),
            plain_cell(log["train_accuracy"].iloc[-1], f"{log['train_accuracy'].iloc[-1]:.4f}", source,
                       f"column=train_accuracy;row={last}"),
            plain_cell(log["images_per_s"].median(), f"{log['images_per_s'].median():.0f}", source,
                       "column=images_per_s;stat=median"),
            plain_cell(log["seconds"].sum(), f"{log['seconds'].sum():.1f}", source, "column=seconds;stat=sum")]})
    figure = report_figures.training_figure({label: log for label, (log, _) in runs.items()})
    expected = len(grid_columns(ctx["cfg"])) * len(ctx["cfg"]["seeds"])
    return {"rows": rows, "figure": figure, "missing": expected - len(runs)}


# ---- provenance -------------------------------------------------------------------------

PACKAGES = ("torch", "torchvision", "snakemake", "numpy", "scikit-learn", "pandas", "scipy", "matplotlib", "jinja2")


def git_state(repo):
    def git(*args):
        try:
            return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or "unknown (not a git checkout)",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def package_versions(packages=PACKAGES):
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def benchmark_table(ctx):
    """Wall time per rule from Snakemake's benchmark files results/benchmarks/<rule>/**.tsv.

    Rows: rule, jobs, total / mean / max wall seconds (column s), total CPU seconds."""
    rows = []
    root = ctx["benchmarks"]
    if not os.path.isdir(root):
        return []
    for rule in sorted(os.listdir(root)):
        folder = os.path.join(root, rule)
        files = sorted(glob.glob(os.path.join(folder, "**", "*.tsv"), recursive=True)) if os.path.isdir(folder) else []
        frames = [pd.read_csv(f, sep="\t") for f in files]
        frames = [f for f in frames if not f.empty]
        if not frames:
            continue
        # A benchmark with repeats has one line per repeat; a job's wall time is their mean.
        per_job = pd.DataFrame([{"s": f["s"].mean(), "cpu_time": f["cpu_time"].mean() if "cpu_time" in f else np.nan}
                                for f in frames])
        source = shown_path(ctx, folder) + "/"
        cells = [plain_cell(len(per_job), str(len(per_job)), source, "stat=jobs"),
                 plain_cell(per_job["s"].sum(), f"{per_job['s'].sum():.1f}", source, "column=s;stat=sum"),
                 plain_cell(per_job["s"].mean(), f"{per_job['s'].mean():.1f}", source, "column=s;stat=mean"),
                 plain_cell(per_job["s"].max(), f"{per_job['s'].max():.1f}", source, "column=s;stat=max")]
        cpu = per_job["cpu_time"]
        cells.append(plain_cell(cpu.sum(), f"{cpu.sum():.1f}", source, "column=cpu_time;stat=sum")
                     if cpu.notna().all() else {"text": "—", "value": "", "std": "", "n": "", "scale": 1,
                                                "key": "", "source": source, "published": "", "delta": ""})
        rows.append({"rule": rule, "cells": cells})
    return rows


def data_checksums(ctx):
    """sha256 of each prepared data set (results/data/*.npz) and of each fetched raw file
    (results/data/fetched/*.json, written by the fetch rule)."""
    prepared = [{"file": shown_path(ctx, p), "bytes": os.path.getsize(p), "sha256": sha256_file(p)}
                for p in sorted(glob.glob(os.path.join(ctx["data"], "*.npz")))]
    fetched = []
    for record_path in sorted(glob.glob(os.path.join(ctx["data"], "fetched", "*.json"))):
        with open(record_path) as f:
            record = json.load(f)
        for key, entry in sorted(record.get("files", {}).items()):
            fetched.append({"dataset": record.get("dataset", ""), "file": key, "path": entry.get("path", ""),
                            "sha256": entry.get("sha256", ""), "record": shown_path(ctx, record_path)})
    return {"prepared": prepared, "fetched": fetched}


def devices(ctx):
    """{device: number of trained models} from the device column of every train_log.csv."""
    counts = {}
    for log, _ in training_runs(ctx).values():
        if "device" in log and len(log):
            name = str(log["device"].iloc[-1])
            counts[name] = counts.get(name, 0) + 1
    return counts


def provenance(ctx):
    cfg = ctx["cfg"]
    return {**git_state(ctx["repo"]), "versions": package_versions(), "python": platform.python_version(),
            "host": platform.node(), "devices": devices(ctx), "benchmarks": benchmark_table(ctx),
            "checksums": data_checksums(ctx),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "config": json.dumps(cfg, indent=2, sort_keys=True)}


# ---- the page ---------------------------------------------------------------------------


def section(section_id, title, build, template, missing, after=None, heading=True, replaces=None):
    """A report section: build(ctx) -> data for `template`, or None to show `missing`.

    The template sees the data as `data` and under the section's id (`robustness` for the
    section "robustness"), besides cfg, leaks and leak_mark. For a section from a plug-in
    module: `after`, the id of the section it follows; `replaces`, the id of a built-in
    section it takes the place of (a plug-in with a built-in's own id replaces it too).
    heading=False: the template writes its own <h2 id="..."> heading."""
    return {"id": section_id, "title": title, "build": build, "template": template, "missing": missing,
            "after": after, "heading": heading, "replaces": replaces}


SECTIONS = [
    section("summary", "Summary: the study's two tables", summary_section, "sections/summary.html.j2",
            "results/tables/accuracy.csv or results/tables/detection.csv is absent: run the aggregate rule."),
    section("robustness", "Accuracy and robustness on MNIST-C",
            functools.partial(long_tables, name="robustness.csv", row_keys=("set",)),
            "sections/long_tables.html.j2",
            "No robustness results in this run (results/tables/robustness.csv is absent): "
            "MNIST-C is evaluated when the workflow's robustness rules are part of the run."),
    section("detection", "OOD detection", detection_section, "sections/detection.html.j2",
            "results/tables/detection.csv is absent: run the aggregate rule."),
    section("calibration", "Calibration", functools.partial(long_tables, name="calibration.csv"),
            "sections/long_tables.html.j2",
            "No calibration results in this run (results/tables/calibration.csv is absent)."),
    section("training", "Training", training_section, "sections/training.html.j2",
            "No train_log.csv under results/models: no model of this grid has finished training."),
    section("provenance", "Provenance", provenance, "sections/provenance.html.j2",
            "Provenance could not be collected."),
]


def plugin_sections():
    """The REPORT_SECTIONS lists of the modules lib/report_<topic>.py, in module-name order.

    A topic adds its sections to the page by defining REPORT_SECTIONS (entries made with
    section()) in its own module, without editing this one."""
    import importlib
    import pkgutil

    import lib.report

    found = []
    for info in sorted(pkgutil.iter_modules(lib.report.__path__), key=lambda m: m.name):
        if info.name not in ("page", "__main__"):
            found.extend(getattr(importlib.import_module(f"lib.report.{info.name}"), "REPORT_SECTIONS", []))
    return found


def all_sections(plugins=None):
    """SECTIONS with the plug-in sections merged in: a plug-in section that names a built-in
    one in `replaces`, or has its id, replaces it; a new one goes after the section named
    by its `after`, else before provenance."""
    sections = list(SECTIONS)
    for extra in plugin_sections() if plugins is None else plugins:
        ids = [s["id"] for s in sections]
        if extra.get("replaces") in ids or extra["id"] in ids:
            sections[ids.index(extra["replaces"] if extra.get("replaces") in ids else extra["id"])] = extra
        elif extra.get("after") in ids:
            sections.insert(ids.index(extra["after"]) + 1, extra)
        else:
            sections.insert(ids.index("provenance") if "provenance" in ids else len(sections), extra)
    return sections


def build_sections(ctx, sections=None):
    """[{id, title, template, missing, data, ...}] with data None where a section's inputs are absent."""
    return [{**s, "data": s["build"](ctx)} for s in (all_sections() if sections is None else sections)]


def render_sections(env, built, common):
    """Each built section's partial, rendered on its own with `common` (cfg, leaks, ...) and its data."""
    for s in built:
        s["html"] = ""
        if s["data"] is not None:
            alias = {} if s["id"] in common or not s["id"].isidentifier() else {s["id"]: s["data"]}
            s["html"] = markupsafe.Markup(env.get_template(s["template"]).render(
                **common, **alias, data=s["data"], section_id=s["id"]))
    return built


def render(tables_dir, models_dir, cfg, template_path, repo=".", results_dir=None, sections=None):
    """The report's HTML for the run whose results/ holds `tables_dir` (results/tables)."""
    results_dir = results_dir or os.path.dirname(os.path.abspath(tables_dir))
    ctx = make_context(cfg, results_dir, tables_dir, models_dir, repo)
    ctx["leaks"] = read_leaks(ctx["tables"], cfg)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.dirname(os.path.abspath(template_path))),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    common = {"cfg": cfg, "leaks": ctx["leaks"], "leak_mark": LEAK_MARK}
    built = render_sections(env, build_sections(ctx, sections), common)
    return env.get_template(os.path.basename(template_path)).render(**common, sections=built)


def main(argv=None):
    p = argparse.ArgumentParser(description="Render the HTML report.")
    p.add_argument("--results", help="the run's results folder (default: the folder above --tables)")
    p.add_argument("--tables", help="default: RESULTS/tables")
    p.add_argument("--models-dir", help="default: RESULTS/models")
    p.add_argument("--config-json", required=True)
    p.add_argument("--template", required=True)
    p.add_argument("--repo", default=".")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if not (a.results or a.tables):
        p.error("give --results (or --tables)")
    tables = a.tables or layout.tables_dir(a.results)
    results = a.results or os.path.dirname(os.path.abspath(tables))
    page = render(tables, a.models_dir or layout.models_dir(results),
                  json.loads(a.config_json), a.template, a.repo, results_dir=a.results)
    missing = missing_cited_files(page, os.path.dirname(os.path.abspath(results)))
    if missing:
        sys.exit(f"error: not writing {a.out}: it would cite {len(missing)} file(s) that are missing:\n  "
                 + "\n  ".join(missing) + "\nRerun the same snakemake command: it rebuilds them, then the report.")
    write_text_atomic(a.out, page)
    print(os.path.abspath(a.out))


if __name__ == "__main__":
    main()
