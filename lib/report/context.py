"""The report context: the config and the declared input files, read once and shared by
the section builders.

    from lib.report.context import make_context, input_file, long_table
    ctx = make_context(cfg, report_inputs(cfg, "results"), "results", repo=".")
    input_file(ctx, "detection")                  # its path, or None when not on disk
    input_file(ctx, "train_logs", path)           # `path`, which must be one of the declared train logs
    long_table(ctx, "detection")                  # {"raw", "summary", "source"} or None
    shown_path(ctx, path)                         # 'results/tables/detection.csv'

A builder reaches files only through input_file()/input_files(): a path that is not
among the declared inputs (lib.report.inputs) raises, so the report rule's inputs stay
the whole of what the report reads. Paths shown in the page are relative to the folder
that holds results/, the run's working directory.
"""
import json
import os

import pandas as pd

from lib.data.leaks import leaked_sets
from lib.evaluate.aggregate import summarize


def make_context(cfg, inputs, results, repo="."):
    """`inputs`: {name: path or [paths]} (lib.report.inputs.report_inputs, or the rule's
    declared inputs); relative paths are relative to the current directory."""
    results = os.path.abspath(results)
    declared = {name: [os.path.abspath(p) for p in ([paths] if isinstance(paths, str) else paths)]
                for name, paths in inputs.items()}
    return {"cfg": cfg, "repo": repo, "results": results, "workdir": os.path.dirname(results),
            "inputs": declared, "_long": {}}


def input_file(ctx, name, path=None):
    """The declared file of input `name` (its only one, or `path` among its files), or None
    when it is not on disk."""
    declared = ctx["inputs"].get(name, [])
    if path is None:
        if len(declared) != 1:
            raise ValueError(f"report input {name!r} holds {len(declared)} files: name the one to read")
        path = declared[0]
    path = os.path.abspath(path)
    if path not in declared:
        raise ValueError(f"the report would read {path}, which is not among its declared inputs {name!r}: "
                         "add it to lib/report/inputs.py (report_inputs), which the report rule declares")
    return path if os.path.exists(path) else None


def input_files(ctx, name):
    """The declared files of input `name` that are on disk, in their declared order."""
    return [p for p in ctx["inputs"].get(name, []) if os.path.exists(p)]


def shown_path(ctx, path):
    """`path` as the page shows it: relative to the run's working directory."""
    return os.path.relpath(os.path.abspath(path), ctx["workdir"])


def read_leaks(path, cfg):
    """{set: reason} of test sets seen in training, from results/tables/leaks.json (the
    leak_marks rule's output) at `path`, else worked out from the config."""
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)["seen_in_training"]
    return leaked_sets(cfg)


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
    """{"raw", "summary", "source"} of the table input `name` (lib.report.inputs.TABLES), or
    None when the file is absent."""
    if name not in ctx["_long"]:
        path = input_file(ctx, name)
        ctx["_long"][name] = None
        if path is not None:
            raw = read_long_table(path)
            ctx["_long"][name] = {"raw": raw, "summary": summarize(raw), "source": shown_path(ctx, path)}
    return ctx["_long"][name]
