"""The OOD detection section: AUROC, AUPR-in, AUPR-out and FPR95 tables by set x score x
model with the near- and far-OOD means, full-spectrum tables, the ranking of the scores, ROC
curves and score histograms drawn from the cached logits.

    from lib.report.detection import build, detection_tables
    data = build(ctx)                  # ctx: lib.report.context.make_context(...); None without detection.csv
    data["tables"][0]["rows"]          # AUROC rows "gaussian, MSP" with one cell per model, then
                                       # "near-OOD mean (fashion_mnist, kmnist), MSP" per group
    data["full_spectrum"]              # the same rows, full-spectrum AUROC and FPR95 (None without it)
    data["ranking"]                    # scores x (all, near, far, full-spectrum): mean rank, mean AUROC
    data["figures"]["roc"]             # PNG data URI, or data["figures"] None without logits
    data["hyperparameters"]["rows"]    # one row per score hyperparameter: values per model, source

The hyperparameter table reads every model's score_hyperparameters.json (lib.evaluate.tuning,
report input "hyperparameters"): the values each score used and where they came from.
"""
import json

import pandas as pd

from lib import layout
from lib.common import load_npz
from lib.data.registry import ood_groups, sets_of_group
from lib.evaluate.ranks import COMPARISONS
from lib.evaluate.scores import SCORE_INPUTS, compute_score
from lib.evaluate.tuning import paper_values
from lib.report.cells import HEADLINE_SCORE, SCORE_LABELS, cell, grid_columns, model_label, protocol_text, set_label
from lib.report.context import input_file, long_table, shown_path

DETECTION_TABLES = (("auroc", "AUROC"), ("aupr_in", "AUPR-in"), ("aupr_out", "AUPR-out"),
                    ("fpr95", "FPR at 95% TPR"))


FULL_SPECTRUM_TABLES = (("auroc", "Full-spectrum AUROC"), ("fpr95", "Full-spectrum FPR at 95% TPR"))
# The ranking's columns: ranks.csv comparisons of the scores (lib.evaluate.ranks), and their headers.
RANKING_COLUMNS = (("scores_ood", "all OOD sets"), ("scores_near", "near-OOD"), ("scores_far", "far-OOD"),
                   ("scores_full_spectrum", "full-spectrum"))


def group_label(group, sets, leaks=()):
    """'near-OOD mean (fashion_mnist, kmnist)': a group-mean row's label names the sets averaged."""
    return f"{group}-OOD mean ({', '.join(set_label(s, leaks) for s in sets)})"


def detection_rows(cfg, metric, per_set, groups=None, leaks=()):
    """Rows (set, score) of one metric from `per_set` = (summary, source), then one row per
    (group, score) from `groups` = (summary, source) of the group means, for groups with sets."""
    columns = grid_columns(cfg)
    summary, source = per_set
    rows = [{"label": f"{set_label(ood, leaks)}, {SCORE_LABELS.get(score, score)}",
             "cells": [cell(summary, source, augment=a, oe=o, metric=metric, set=ood, score=score) for a, o in columns]}
            for ood in cfg["ood_sets"] for score in cfg["scores"]]
    if groups is not None:
        summary, source = groups
        for group, sets in sets_of_group(ood_groups(cfg)).items():
            if sets:
                rows += [{"label": f"{group_label(group, sets, leaks)}, {SCORE_LABELS.get(score, score)}", "group": group,
                          "cells": [cell(summary, source, augment=a, oe=o, metric=metric, set=group, score=score)
                                    for a, o in columns]} for score in cfg["scores"]]
    return rows


def detection_tables(cfg, det, det_src, leaks=(), groups=None, metrics=DETECTION_TABLES):
    """One table per metric: per-set rows, then the group means (`groups`: (summary, source) or None)."""
    header = [model_label(a, o) for a, o in grid_columns(cfg)]
    return [{"metric": metric, "title": title, "header": header,
             "rows": detection_rows(cfg, metric, (det, det_src), groups, leaks)} for metric, title in metrics]


def _rank_cell(row, column, source, scale, text):
    return {"text": text, "value": repr(float(row[column])), "std": "", "n": "", "scale": scale, "source": source,
            "key": f"comparison={row['comparison']};item={row['item']};column={column}", "published": "", "delta": ""}


def ranking(ranks, source):
    """The scores' ranking from ranks.csv: per score, the mean rank and mean AUROC over all OOD
    sets, the near ones, the far ones and under full-spectrum detection (AUROC pooled over the
    models); the winner of each column, and how many sets each ranking is over. None without rows."""
    if ranks is None:
        return None
    parts = {c: ranks[ranks["comparison"] == c].set_index("item", drop=False) for c, _ in RANKING_COLUMNS}
    shown = [(c, title) for c, title in RANKING_COLUMNS if not parts[c].empty]
    if not shown:
        return None
    # Best first by the first column's mean rank (all OOD sets), then any score it lacks.
    items = list(dict.fromkeys([*parts[shown[0][0]].sort_values("mean_rank", kind="stable")["item"],
                                *(item for c, _ in shown for item in parts[c]["item"])]))
    rows, winners = [], []
    for c, title in shown:
        best = parts[c]["mean_rank"].idxmin()
        winners.append({"column": title, "comparison": c, "score": SCORE_LABELS.get(best, best),
                        "mean_rank": float(parts[c].loc[best, "mean_rank"]), "n_blocks": int(parts[c].loc[best, "n_blocks"])})
    for item in items:
        cells = []
        for c, _ in shown:
            if item in parts[c].index:
                r = parts[c].loc[item]
                cells += [_rank_cell(r, "mean_rank", source, 1, f"{r['mean_rank']:.2f}"),
                          _rank_cell(r, "mean_value", source, 100, f"{r['mean_value'] * 100:.2f}")]
            else:
                cells += [{"text": "—", "value": "", "std": "", "n": "", "scale": 1, "source": source, "key": "",
                           "published": "", "delta": ""}] * 2
        rows.append({"label": SCORE_LABELS.get(item, item), "cells": cells})
    header = [f"{what}, {title}" for _, title in shown for what in ("rank", "AUROC %")]
    blocks = {title: int(parts[c]["n_blocks"].iloc[0]) for c, title in shown}
    return {"header": header, "rows": rows, "winners": winners, "blocks": blocks, "source": source,
            "titles": {c: COMPARISONS[c] for c, _ in shown}}


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


def _pair(table):
    return None if table is None else (table["summary"], table["source"])


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
    cfg = ctx["cfg"]
    fs = long_table(ctx, "full_spectrum")
    full_spectrum = None
    if fs is not None:
        header = [model_label(a, o) for a, o in grid_columns(cfg)]
        full_spectrum = [{"metric": metric, "title": title, "header": header,
                          "rows": detection_rows(cfg, metric, _pair(fs), _pair(long_table(ctx, "full_spectrum_groups")),
                                                 ctx["leaks"])} for metric, title in FULL_SPECTRUM_TABLES]
    ranks_path = input_file(ctx, "ranks")
    ranks = pd.read_csv(ranks_path, keep_default_na=False, na_values=[""]) if ranks_path else None
    groups = sets_of_group(ood_groups(cfg))
    return {"tables": detection_tables(cfg, det["summary"], det["source"], ctx["leaks"],
                                       _pair(long_table(ctx, "detection_groups"))),
            "groups": groups, "full_spectrum": full_spectrum,
            "ranking": ranking(ranks, shown_path(ctx, ranks_path) if ranks_path else ""),
            "figures": detection_figures(ctx, det["summary"]), "protocol": protocol_text(cfg),
            "hyperparameters": hyperparameter_table(ctx)}
