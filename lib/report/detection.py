"""The OOD detection section: AUROC, AUPR-in, AUPR-out and FPR95 tables by set x score x
model, ROC curves and score histograms drawn from the cached logits.

    from lib.report.detection import build, detection_tables
    data = build(ctx)                  # ctx: lib.report.context.make_context(...); None without detection.csv
    data["tables"][0]["rows"]          # AUROC rows "gaussian, MSP" with one cell per model
    data["figures"]["roc"]             # PNG data URI, or data["figures"] None without logits
"""
import pandas as pd

from lib import layout
from lib.common import load_npz
from lib.evaluate.scores import SCORE_INPUTS, compute_score
from lib.report.cells import HEADLINE_SCORE, SCORE_LABELS, cell, grid_columns, model_label, protocol_text, set_label
from lib.report.context import input_file, long_table, shown_path

DETECTION_TABLES = (("auroc", "AUROC"), ("aupr_in", "AUPR-in"), ("aupr_out", "AUPR-out"),
                    ("fpr95", "FPR at 95% TPR"))


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
    if score is None:
        return None
    seed = cfg["seeds"][0]
    curves, sources, missing = {ood: {} for ood in cfg["ood_sets"]}, [], []
    for a, o in grid_columns(cfg):
        s = layout.EXTERNAL_SEED if a == layout.EXTERNAL_AUGMENT else seed
        paths = {name: input_file(ctx, "logits", layout.logits_file(name, a, o, s, ctx["results"]))
                 for name in ["id_test", *cfg["ood_sets"]]}
        if any(p is None for p in paths.values()):
            missing.append(model_label(a, o))
            continue
        id_scores = compute_score(score, load_logits(paths["id_test"]))
        sources.append(shown_path(ctx, layout.logits_dir(a, o, s, ctx["results"])))
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


def build(ctx):
    det = long_table(ctx, "detection")
    if det is None:
        return None
    return {"tables": detection_tables(ctx["cfg"], det["summary"], det["source"], ctx["leaks"]),
            "figures": detection_figures(ctx, det["summary"]), "protocol": protocol_text(ctx["cfg"])}
