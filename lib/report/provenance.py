"""The provenance section: code version, packages, devices, wall times and data checksums.

    from lib.report.provenance import build, benchmark_table
    data = build(ctx)                 # ctx: lib.report.context.make_context(...)
    data["commit"], data["versions"], data["benchmarks"], data["checksums"]
    benchmark_table(ctx)              # [{"rule": "train", "cells": [jobs, total, mean, max, CPU s]}]

Reads the declared benchmark files, prepared data sets, mixing set and download records
(lib.report.inputs), the train logs (for the devices), and git and the installed
packages for the code's version.
"""
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess

import numpy as np
import pandas as pd

from lib import layout
from lib.common import sha256_file
from lib.report.cells import empty_cell, plain_cell
from lib.report.context import input_files, shown_path
from lib.report.training import training_runs

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


def benchmarks_by_rule(ctx):
    """{rule folder: [files]} of the declared benchmark files results/benchmarks/<rule>/**.tsv."""
    root = layout.benchmarks_dir(ctx["results"])
    groups = {}
    for path in sorted(input_files(ctx, "benchmarks")):
        parts = os.path.relpath(path, root).split(os.sep)
        if len(parts) > 1:
            groups.setdefault(parts[0], []).append(path)
    return {rule: groups[rule] for rule in sorted(groups)}


def benchmark_table(ctx):
    """Wall time per rule from Snakemake's benchmark files results/benchmarks/<rule>/**.tsv.

    Rows: rule, jobs, total / mean / max wall seconds (column s), total CPU seconds."""
    rows = []
    for rule, files in benchmarks_by_rule(ctx).items():
        frames = [pd.read_csv(f, sep="\t") for f in files]
        frames = [f for f in frames if not f.empty]
        if not frames:
            continue
        # A benchmark with repeats has one line per repeat; a job's wall time is their mean.
        per_job = pd.DataFrame([{"s": f["s"].mean(), "cpu_time": f["cpu_time"].mean() if "cpu_time" in f else np.nan}
                                for f in frames])
        source = shown_path(ctx, os.path.join(layout.benchmarks_dir(ctx["results"]), rule)) + "/"
        cells = [plain_cell(len(per_job), str(len(per_job)), source, "stat=jobs"),
                 plain_cell(per_job["s"].sum(), f"{per_job['s'].sum():.1f}", source, "column=s;stat=sum"),
                 plain_cell(per_job["s"].mean(), f"{per_job['s'].mean():.1f}", source, "column=s;stat=mean"),
                 plain_cell(per_job["s"].max(), f"{per_job['s'].max():.1f}", source, "column=s;stat=max")]
        cpu = per_job["cpu_time"]
        cells.append(plain_cell(cpu.sum(), f"{cpu.sum():.1f}", source, "column=cpu_time;stat=sum")
                     if cpu.notna().all() else empty_cell(source, scale=1))
        rows.append({"rule": rule, "cells": cells})
    return rows


def data_checksums(ctx):
    """sha256 of each prepared data set (results/data/<set>.npz, the mixing set) and of each
    fetched raw file (listed in results/data/fetched/<set>.json, written by the fetch rules)."""
    prepared = [{"file": shown_path(ctx, p), "bytes": os.path.getsize(p), "sha256": sha256_file(p)}
                for p in sorted(input_files(ctx, "data") + input_files(ctx, "mixing"))]
    fetched = []
    for record_path in sorted(input_files(ctx, "fetched")):
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


def build(ctx):
    cfg = ctx["cfg"]
    return {**git_state(ctx["repo"]), "versions": package_versions(), "python": platform.python_version(),
            "host": platform.node(), "devices": devices(ctx), "benchmarks": benchmark_table(ctx),
            "checksums": data_checksums(ctx),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "config": json.dumps(cfg, indent=2, sort_keys=True)}
