"""Render results/report.html from the CSV tables (Jinja2; one self-contained file).

    python -m lib.report --tables results/tables --models-dir results/models \
        --config-json "$CFG" --template workflow/templates/report.html.j2 --out results/report.html

Every table cell carries `data-value` (the exact mean) and `data-source` (the CSV it came
from), so a reader or a test can trace each number back to a file.
"""
import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess

import jinja2
import numpy as np
import pandas as pd

from lib import published
from lib.aggregate import summarize
from lib.common import write_text_atomic
from lib.datasets import leaked_sets
from lib.report_robustness import robustness_report
from lib.report_evaluation import evaluation_section
from lib.report_augment import augment_samples_section

AUGMENT_LABELS = {"none": "Base", "saltpepper": "S&P", "pixmix": "PixMix"}
OE_LABELS = {"baseline": "", "oe": "+OE", "oe_tune": "+OE tune"}
SCORE_LABELS = {"msp": "MSP", "xent": "cross-entropy", "energy": "energy", "maxlogit": "max logit",
                "odin": "ODIN", "mahalanobis": "Mahalanobis"}


def model_label(augment, oe):
    return (AUGMENT_LABELS.get(augment, augment) + " " + OE_LABELS.get(oe, oe)).strip()


LEAK_MARK = "†"  # dagger after a test set that was seen in training


def read_leaks(tables_dir, cfg):
    """{set: reason} of test sets seen in training, from leaks.json (else from the config)."""
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


def cell(summary, source, percent=True, published_value=None, **key):
    rows = summary
    for k, v in key.items():
        rows = rows[rows[k] == v]
    if rows.empty:
        return {"text": "—", "value": "", "source": source, "published": _pub(published_value, percent), "delta": ""}
    r = rows.iloc[0]
    delta = ""
    if published_value is not None:
        delta = f"{(r['mean'] - published_value) * (100 if percent else 1):+.2f}"
    return {"text": fmt_cell(r["mean"], r["std"], r["n"], percent), "value": repr(float(r["mean"])),
            "source": source, "published": _pub(published_value, percent), "delta": delta}


def _pub(value, percent):
    if value is None:
        return ""
    return f"{value * (100 if percent else 1):.2f}"


def study_tables(cfg, acc, det, acc_src, det_src, robust=None, leaks=()):
    """The study's two tables, same shape: accuracy by augment; AUROC by set x score x model."""
    id_name = cfg["in_distribution"]
    pub_id = "mnist" if id_name == "mnist" else None
    augments = cfg["augment"]
    acc_rows = [{"label": f"{id_name} test accuracy", "cells": [
        cell(acc, acc_src, published_value=published.ACCURACY.get((pub_id, a)) if pub_id else None,
             augment=a, oe="baseline", metric="accuracy") for a in augments]}]
    robust_src = "results/tables/robustness.csv"
    acc_rows.append(robust["study_row"] if robust else {"label": "MNIST-C accuracy (mean of 15 corruptions)", "cells": [
        {"text": "—", "value": "", "source": robust_src, "delta": "",
         "published": _pub(published.ACCURACY.get(("mnist_c", a)), True)} for a in augments],
        "note": "Robustness on MNIST-C is not part of this run yet."})
    columns = [(a, o) for a in augments for o in cfg["oe"]]
    auroc_rows = []
    for ood in cfg["ood_sets"]:
        for score in [s for s in ("msp", "xent") if s in cfg["scores"]]:
            auroc_rows.append({"label": f"{set_label(ood, leaks)}, {SCORE_LABELS[score]}", "cells": [
                cell(det, det_src, published_value=published.AUROC.get((ood, score, a, o)) if id_name == "mnist" else None,
                     augment=a, oe=o, metric="auroc", set=ood, score=score) for a, o in columns]})
    return {"accuracy_header": [AUGMENT_LABELS.get(a, a) for a in augments], "accuracy_rows": acc_rows,
            "auroc_header": [model_label(a, o) for a, o in columns], "auroc_rows": auroc_rows}


def detection_tables(cfg, det, det_src, leaks=()):
    columns = [(a, o) for a in cfg["augment"] for o in cfg["oe"]]
    tables = []
    for metric, title in (("auroc", "AUROC"), ("aupr_in", "AUPR-in"), ("aupr_out", "AUPR-out"), ("fpr95", "FPR at 95% TPR")):
        rows = [{"label": f"{set_label(ood, leaks)}, {SCORE_LABELS.get(score, score)}",
                 "cells": [cell(det, det_src, augment=a, oe=o, metric=metric, set=ood, score=score) for a, o in columns]}
                for ood in cfg["ood_sets"] for score in cfg["scores"]]
        tables.append({"metric": metric, "title": title, "header": [model_label(a, o) for a, o in columns], "rows": rows})
    return tables


def training_curves(models_dir, cfg):
    curves = []
    for a in cfg["augment"]:
        for o in cfg["oe"]:
            for s in cfg["seeds"]:
                path = os.path.join(models_dir, a, o, f"seed{s}", "train_log.csv")
                if os.path.exists(path):
                    df = pd.read_csv(path)
                    curves.append({"model": f"{model_label(a, o)} seed {s}", "source": path,
                                   "epochs": len(df), "final_loss": float(df["loss"].iloc[-1]),
                                   "final_train_accuracy": float(df["train_accuracy"].iloc[-1]),
                                   "images_per_s": float(df["images_per_s"].median()),
                                   "device": str(df["device"].iloc[-1])})
    return curves


def provenance(cfg, repo):
    def git(*args):
        try:
            return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    versions = {}
    for pkg in ("torch", "torchvision", "snakemake", "numpy", "scikit-learn", "pandas", "scipy"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {"commit": git("rev-parse", "HEAD") or "unknown (not a git checkout)",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "versions": versions, "python": platform.python_version(), "host": platform.node(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "config": json.dumps(cfg, indent=2, sort_keys=True)}


def render(tables_dir, models_dir, cfg, template_path, repo, corruptions_dir=None, id_data=None):
    det_src = os.path.join(tables_dir, "detection.csv")
    acc_src = os.path.join(tables_dir, "accuracy.csv")
    det = summarize(pd.read_csv(det_src, keep_default_na=False, na_values=[""]).assign(score=lambda d: d["score"].fillna("")))
    acc = summarize(pd.read_csv(acc_src).assign(score=""))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.dirname(template_path)),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.get_template(os.path.basename(template_path))
    robust = robustness_report(cfg, tables_dir, corruptions_dir, id_data)
    leaks = read_leaks(tables_dir, cfg)
    return template.render(cfg=cfg, study=study_tables(cfg, acc, det, acc_src, det_src, robust, leaks), robustness=robust,
                           detection=detection_tables(cfg, det, det_src, leaks), leaks=leaks, leak_mark=LEAK_MARK,
                           curves=training_curves(models_dir, cfg), prov=provenance(cfg, repo),
                           evaluation=evaluation_section(tables_dir, cfg),
                           augment_samples=augment_samples_section(cfg, id_data, tables_dir),
                           oe_reference=published.OE_REFERENCE)


def main(argv=None):
    p = argparse.ArgumentParser(description="Render the HTML report.")
    p.add_argument("--tables", required=True)
    p.add_argument("--models-dir", required=True)
    p.add_argument("--config-json", required=True)
    p.add_argument("--template", required=True)
    p.add_argument("--repo", default=".")
    p.add_argument("--out", required=True)
    p.add_argument("--corruptions-dir", help="MNIST-C npz files, for the example digit")
    p.add_argument("--id-data", help="the in-distribution npz, for the clean example digit")
    a = p.parse_args(argv)
    page = render(a.tables, a.models_dir, json.loads(a.config_json), a.template, a.repo, a.corruptions_dir, a.id_data)
    write_text_atomic(a.out, page)
    print(os.path.abspath(a.out))


if __name__ == "__main__":
    main()
