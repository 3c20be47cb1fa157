"""The Outlier Exposure paper's MNIST table beside the matching cells of this run.

A report section (lib.report.render.SECTIONS, after the summary). Rows: the authors' three
models x (accuracy = 100 - their test error; FPR95, AUROC, AUPR per OOD set they published).
Columns: their checkpoint evaluated here (the external model named in OE_PAPER_CHECKPOINTS,
when configured); the same model trained here with augment `none` (when in the grid).
Each row's note gives the published number (lib.report.published.OE_PAPER); the cells
are ours only, so every shown number is a row of one of this run's tables.

    from lib.report import published_oe
    data = published_oe.build(ctx)   # None when the run has no matching cell at all

Like for like: FPR95 here is the authors' variant (recall nearest 95%, fpr95_nearest) and
AUPR is AUPR-out (OOD positive), the two their code printed.
"""
from lib.report import published
from lib.layout import EXTERNAL_AUGMENT
from lib.report.cells import cell, empty_cell, protocol_text
from lib.report.context import long_table

MODEL_LABELS = {"baseline": "Baseline", "oe": "OE (scratch)", "oe_tune": "OE (tune)"}
SET_LABELS = {"fashion_mnist": "Fashion-MNIST", "gaussian": "Gaussian", "bernoulli": "Bernoulli",
              "negated": "negated MNIST"}
# Their metric name -> the metric of detection.csv that computes it their way.
DETECTION_METRIC = {"fpr95": "fpr95_nearest", "auroc": "auroc", "aupr": "aupr_out"}
METRIC_LABELS = {"fpr95": "FPR95", "auroc": "AUROC", "aupr": "AUPR"}
HEADER = ["their weights, evaluated here", "trained here (none augment)"]


def published_rows(cfg, acc, det):
    externals = cfg.get("external_models", {})
    columns = []
    for model in published.OE_PAPER:
        name = published.OE_PAPER_CHECKPOINTS[model]
        columns.append((model, (EXTERNAL_AUGMENT, name) if name in externals else None,
                        ("none", model) if "none" in cfg["augment"] and model in cfg["oe"] else None))
    rows = []
    for model, theirs, ours in columns:
        for quantity, value in published.OE_PAPER[model].items():
            if quantity == "test_error":
                # accuracy.csv holds accuracy: compared as 1 - their test error, so every cell is a file's row
                label, table, key, value = "accuracy", acc, dict(metric="accuracy", set="id_test"), 1.0 - value
            else:
                ood, metric = quantity
                if ood not in cfg["ood_sets"]:
                    continue
                label = f"{SET_LABELS[ood]} {METRIC_LABELS[metric]}"
                table, key = det, dict(metric=DETECTION_METRIC[metric], set=ood, score="msp")
            cells = []
            for column in (theirs, ours):
                if column is None or table is None:
                    cells.append(empty_cell())
                else:
                    cells.append(cell(table["summary"], table["source"], augment=column[0], oe=column[1], **key))
            rows.append({"label": f"{MODEL_LABELS[model]}: {label}", "note": f"published {value * 100:.2f}",
                         "cells": cells})
    return rows


def build(ctx):
    cfg = ctx["cfg"]
    acc, det = long_table(ctx, "accuracy"), long_table(ctx, "detection")
    if acc is None and det is None or cfg["in_distribution"] != "mnist":
        return None
    rows = published_rows(cfg, acc, det)
    if not any(c["value"] for row in rows for c in row["cells"]):
        return None  # neither their checkpoints nor their models trained here are in this run
    return {"header": HEADER, "rows": rows, "protocol": protocol_text(cfg),
            "protocol_matches": cfg.get("evaluation", {}).get("protocol") == "oe_paper"}

