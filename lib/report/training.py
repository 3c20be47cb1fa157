"""The training section: final loss and accuracy, speed and time of every model, and the
curves per epoch, from each model's train_log.csv.

    from lib.report.training import build, training_runs
    data = build(ctx)                 # ctx: lib.report.context.make_context(...); None without logs
    data["rows"][0]["cells"]          # epochs, final loss, final train accuracy, images/s, seconds
    training_runs(ctx)                # {"Base seed 1": (train_log DataFrame, shown path)}
"""
import pandas as pd

from lib.report.cells import model_label, plain_cell, trained_columns
from lib.report.context import input_file, shown_path
from lib import layout


def training_runs(ctx):
    """{label: (train_log DataFrame, shown path)} for every model of the grid with a log."""
    cfg, runs = ctx["cfg"], {}
    for a, o in trained_columns(cfg):  # external checkpoints have no train log
        for s in cfg["seeds"]:
            path = input_file(ctx, "train_logs", layout.train_log_file(a, o, s, ctx["results"]))
            if path is not None:
                runs[f"{model_label(a, o)} seed {s}"] = (pd.read_csv(path), shown_path(ctx, path))
    return runs


def build(ctx):
    from lib.report import figures as report_figures  # matplotlib only when a figure is drawn

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
    expected = len(trained_columns(ctx["cfg"])) * len(ctx["cfg"]["seeds"])
    return {"rows": rows, "figure": figure, "missing": expected - len(runs)}
