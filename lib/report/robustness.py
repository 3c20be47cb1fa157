"""The report's robustness section: MNIST-C accuracy per corruption and per model, HTML-ready.

    from lib.report.robustness import robustness_report
    section = robustness_report(cfg, "results/tables", "results/data/corruptions",
                                "results/data/digits.npz")
    section["header"], section["rows"]   # corruptions (+ mean, non-overlap mean, mCE) x models
    section["chart_png"]             # base64 PNG: accuracy per corruption, one bar per model
    section["examples_png"]          # base64 PNG: one test digit under all 15 corruptions

robustness_report returns None when robustness_summary.csv is absent (a run without
MNIST-C). Cells are dicts with `text`, `value` (the exact mean over seeds, for the
cell's data-value) and `source` (the CSV it came from), like lib/report/cells.py's cells;
`overlap` marks a corruption the model's training augmentation already shows it
(lib.evaluate.robustness.OVERLAP). Figures are base64 PNGs so the report stays one offline file.

In the page: build(ctx), the section "robustness" of lib.report.render.SECTIONS; the
study table's MNIST-C row is the summary's (lib.report.summary, from robustness_summary.csv).
"""
import base64
import io
import os

import numpy as np
import pandas as pd
# Figure without pyplot: no global state and no display needed (savefig uses Agg).
from matplotlib.figure import Figure

from lib import layout
from lib.evaluate.aggregate import summarize
from lib.common import load_npz
from lib.data.mnist_c import CORRUPTIONS
from lib.report.cells import grid_columns, key_text, model_label
from lib.report.context import input_file, shown_path
from lib.evaluate.robustness import OVERLAP

SUMMARY_LABELS = {"mean_accuracy": "mean of the 15 corruptions",
                  "non_overlap_mean": "mean without overlapping corruptions (‡)",
                  "mce": "mCE vs Base (100 = Base; lower is better)"}


def read_long_csv(path):
    # "none" is an augmentation, not a missing value: only empty fields are NaN.
    return pd.read_csv(path, keep_default_na=False, na_values=[""]).assign(score="")


def percent_text(mean, std, n):
    """'97.22 ± 0.40'; one seed (or an undefined std) shows the mean alone; NaN shows '—'."""
    if mean is None or np.isnan(mean):
        return "—"
    text = f"{mean * 100:.2f}"
    if n > 1 and not np.isnan(std):
        text += f" ± {std * 100:.2f}"
    return text


def summary_cell(summary, source, overlap=False, **key):
    rows = summary
    for k, v in key.items():
        rows = rows[rows[k] == v]
    if rows.empty:
        return {"text": "—", "value": "", "source": source, "key": key_text(**key), "overlap": overlap, "n": 0}
    r = rows.iloc[0]
    return {"text": percent_text(float(r["mean"]), float(r["std"]), int(r["n"])), "value": repr(float(r["mean"])),
            "source": source, "key": key_text(**key), "overlap": overlap, "n": int(r["n"])}


def grid_models(cfg):
    return grid_columns(cfg)  # trained here, then external checkpoints


def per_corruption_rows(cfg, long_summary, long_src, summary, summary_src):
    """One row per corruption, then the three summary rows; one column per model."""
    models = grid_models(cfg)
    rows = []
    for corruption in CORRUPTIONS:
        rows.append({"label": corruption, "summary": False, "cells": [
            summary_cell(long_summary, long_src, overlap=corruption in OVERLAP.get(a, ()), augment=a, oe=o,
                         metric="accuracy", set=corruption) for a, o in models]})
    for metric, label in SUMMARY_LABELS.items():
        rows.append({"label": label, "summary": True, "cells": [
            summary_cell(summary, summary_src, augment=a, oe=o, metric=metric, set="mnist_c") for a, o in models]})
    return rows


def png_base64(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def accuracy_chart(cfg, long_summary, summary):
    """Grouped bars: accuracy (%) per corruption and the mean, one bar per model, ± std over seeds."""
    models = grid_models(cfg)
    groups = list(CORRUPTIONS) + ["mean"]
    fig = Figure(figsize=(12, 4.2))
    ax = fig.subplots()
    width = 0.8 / len(models)
    x = np.arange(len(groups))
    for i, (augment, oe) in enumerate(models):
        means, stds = [], []
        for group in groups:
            table, key = ((summary, dict(metric="mean_accuracy", set="mnist_c")) if group == "mean"
                          else (long_summary, dict(metric="accuracy", set=group)))
            rows = table[(table["augment"] == augment) & (table["oe"] == oe)
                         & (table["metric"] == key["metric"]) & (table["set"] == key["set"])]
            means.append(float(rows["mean"].iloc[0]) * 100 if len(rows) else np.nan)
            stds.append(float(rows["std"].iloc[0]) * 100 if len(rows) and rows["n"].iloc[0] > 1 else 0.0)
        spread = np.nan_to_num(stds)
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=spread if spread.any() else None, capsize=2,
               label=model_label(augment, oe))
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=40, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("MNIST-C accuracy per corruption (mean ± std over seeds)")
    return png_base64(fig)


def example_images(corruptions_dir, id_data_path, index=0):
    """[(title, uint8 28x28)]: test image `index` clean (when the ID test set is the one
    corrupted: same length and labels) and under each of the 15 corruptions."""
    images = []
    first = None
    for corruption in CORRUPTIONS:
        arrays = load_npz(layout.npz_in(corruptions_dir, corruption), required=("x_test", "y_test"))
        images.append((corruption, arrays["x_test"][index]))
        if first is None:
            first = arrays["y_test"]
    if id_data_path and os.path.exists(id_data_path):
        arrays = load_npz(id_data_path, required=("x_test", "y_test"))
        if len(arrays["y_test"]) == len(first) and np.array_equal(arrays["y_test"], first):
            images.insert(0, ("clean", arrays["x_test"][index]))
    return images


def examples_figure(images):
    columns = 8
    rows = -(-len(images) // columns)
    fig = Figure(figsize=(columns * 1.3, rows * 1.5))
    axes = fig.subplots(rows, columns)
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, (title, image) in zip(np.ravel(axes), images):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    return png_base64(fig)


def robustness_report(cfg, tables_dir, corruptions_dir=None, id_data_path=None, shown_tables=None):
    """All the section needs, or None when tables_dir has no robustness_summary.csv.

    `shown_tables`: the folder as the page names it in data-source (default `tables_dir`)."""
    long_path = os.path.join(tables_dir, "robustness.csv")
    summary_path = os.path.join(tables_dir, "robustness_summary.csv")
    if not (os.path.exists(long_path) and os.path.exists(summary_path)):
        return None
    long_src = os.path.join(shown_tables or tables_dir, "robustness.csv")
    summary_src = os.path.join(shown_tables or tables_dir, "robustness_summary.csv")
    long_summary = summarize(read_long_csv(long_path))
    summary = summarize(read_long_csv(summary_path))
    models = grid_models(cfg)
    data = {
        "header": [model_label(a, o) for a, o in models],
        "rows": per_corruption_rows(cfg, long_summary, long_src, summary, summary_src),
        "overlaps": {model_label(a, o): sorted(OVERLAP.get(a, ())) for a, o in models if OVERLAP.get(a)},
        "seeds": len(cfg["seeds"]),
        "source": cfg.get("corruptions", "official"),
        "chart_png": accuracy_chart(cfg, long_summary, summary),
        "examples_png": "",
    }
    if corruptions_dir and all(os.path.exists(layout.npz_in(corruptions_dir, c)) for c in CORRUPTIONS):
        data["examples_png"] = examples_figure(example_images(corruptions_dir, id_data_path))
    return data


def build(ctx):
    """The section's data from the declared tables, corrupted sets and in-distribution set."""
    cfg, results = ctx["cfg"], ctx["results"]
    # robustness_report opens the files of these folders by name: each one must be a declared input.
    for name in ("robustness", "robustness_summary"):
        input_file(ctx, name, layout.table_file(f"{name}.csv", results))
    for corruption in CORRUPTIONS:
        input_file(ctx, "corrupted", layout.corruption_file(corruption, results))
    id_data = input_file(ctx, "data", layout.data_file(cfg["in_distribution"], results))
    return robustness_report(cfg, layout.tables_dir(results), layout.corruption_dir(results), id_data,
                             shown_path(ctx, layout.tables_dir(results)))
