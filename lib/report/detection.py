"""The OOD detection section: AUROC, AUPR-in, AUPR-out and FPR95 tables by set x score x
model, ROC curves and score histograms drawn from the cached logits.

    from lib.report.detection import build, detection_tables
    data = build(ctx)                  # ctx: lib.report.context.make_context(...); None without detection.csv
    data["tables"][0]["rows"]          # AUROC rows "gaussian, MSP" with one cell per model
    data["figures"]["roc"]             # PNG data URI, or data["figures"] None without logits
    data["hyperparameters"]["rows"]    # one row per score hyperparameter: values per model, source

The hyperparameter table reads every model's score_hyperparameters.json (lib.evaluate.tuning,
report input "hyperparameters"): the values each score used and where they came from.
"""
import json

import pandas as pd

from lib import layout
from lib.common import load_npz
from lib.evaluate.scores import SCORE_INPUTS, compute_score
from lib.evaluate.tuning import paper_values
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


def _value_text(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def hyperparameter_table(ctx):
    """Per hyperparameter of a listed score: its value in each model (seeds joined by " / " when
    they differ) and its source ("paper default" or "tuned on <sets>"). None without any file."""
    cfg = ctx["cfg"]
    columns = grid_columns(cfg)
    records, files = {}, {}

    def seeds(augment):  # an external checkpoint is one model of seed EXTERNAL_SEED
        return [layout.EXTERNAL_SEED] if augment == layout.EXTERNAL_AUGMENT else cfg["seeds"]

    for a, o in columns:
        for seed in seeds(a):
            path = input_file(ctx, "hyperparameters", layout.hyperparameters_file(a, o, seed, ctx["results"]))
            if path is not None:
                with open(path) as f:
                    records[(a, o, seed)] = json.load(f)
                files[(a, o, seed)] = shown_path(ctx, path)
    if not records:
        return None
    rows = []
    for score in cfg["scores"]:
        entries = [r["scores"][score] for r in records.values() if score in r["scores"]]
        if not entries:
            continue
        # In the papers' order (the JSON file keeps its keys sorted).
        order = list(paper_values(1).get(score, {}))
        for name in sorted(entries[0]["values"], key=lambda n: order.index(n) if n in order else len(order)):
            cells = []
            for a, o in columns:
                found = [seed for seed in seeds(a) if (a, o, seed) in records and score in records[(a, o, seed)]["scores"]]
                values = list(dict.fromkeys(records[(a, o, seed)]["scores"][score]["values"][name] for seed in found))
                numeric = all(isinstance(v, (int, float)) for v in values)
                # data-value/-source/-key as in every number cell: the values, the first seed's file, the entry
                cells.append({"text": " / ".join(_value_text(v) for v in values) or "—",
                              "value": ",".join(repr(v) for v in values) if values and numeric else None,
                              "source": files[(a, o, found[0])] if found else "",
                              "key": f"scores.{score}.values.{name}"})
            rows.append({"score": SCORE_LABELS.get(score, score), "name": name.replace("_", " "), "cells": cells,
                         "source": "; ".join(dict.fromkeys(e["source"] for e in entries))})
    sets = next((r["validation_ood_sets"] for r in records.values() if r["validation_ood_sets"]), [])
    selection = next((r["selection"] for r in records.values() if r["selection"]), None)
    files = list(files.values())
    if len(files) > 4:  # one per model: the pattern says where they are
        files = [shown_path(ctx, layout.hyperparameters_file(results=ctx["results"])) + f" ({len(files)} models)"]
    return {"header": [model_label(a, o) for a, o in columns], "rows": rows, "sources": files,
            "validation_sets": sets, "selection": selection}


def build(ctx):
    det = long_table(ctx, "detection")
    if det is None:
        return None
    return {"tables": detection_tables(ctx["cfg"], det["summary"], det["source"], ctx["leaks"]),
            "figures": detection_figures(ctx, det["summary"]), "protocol": protocol_text(ctx["cfg"]),
            "hyperparameters": hyperparameter_table(ctx)}
