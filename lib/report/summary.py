"""The summary section: the study's two tables and a paragraph that reads them.

    from lib.report.summary import build, summary_reading, study_tables
    data = build(ctx)                  # ctx: lib.report.context.make_context(...); None without
                                       # accuracy.csv or detection.csv
    data["reading"]["sentences"]       # which model wins where, and which differences are noise
    data["reading"]["rules"]           # the rules (lib.report.verdicts.RULE_TEXT) the sentences used
    data["study"]["auroc_rows"]        # the study's AUROC table, our cells beside the published ones
    data["baseline_warning"]           # None, or the sentences that open the summary when the Base
                                       # model is no sound baseline (lib.evaluate.baseline_check)

The page shows the paragraphs of `data` in order (workflow/templates/sections/summary.html.j2):
a paragraph that reports a problem with the run itself belongs before the reading, as its
own entry of `data` and its own <p> at the top of the template.
"""
import numpy as np

from lib.layout import EXTERNAL_AUGMENT
from lib.evaluate.baseline_check import BASE_MODEL, check_baseline, recovered_part, warning_sentences
from lib.report import published
from lib.report.cells import (AUGMENT_LABELS, HEADLINE_SCORE, OE_LABELS, SCORE_LABELS, cell, empty_cell,
                              grid_columns, model_label, protocol_text, published_text, set_label,
                              trained_columns)
from lib.report.context import input_file, long_table, shown_path
from lib.report.statistics import METRIC_NAMES, SET_NAMES, detectable_block, read_detectable
from lib.report.verdicts import RULE_TEXT, best_and_ties, compare, read_differences

# The study's MNIST-C row: this metric of results/tables/robustness_summary.csv (long format,
# one row per model and seed; mean accuracy over the corruptions).
MNIST_C_METRIC = "mean_accuracy"


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



def summary_reading(cfg, acc, det, leaks=(), findings=(), diff=None):
    """One paragraph, as a list of sentences, read off the numbers; and the rules it used.

    `acc` and `det` are long_table() results (raw + summary) or None; sets in `leaks` carry
    the leak mark; `findings` (lib.evaluate.baseline_check) are the Base model's failures:
    a change against Base on a failed set says how much of it is Base recovering. `diff`:
    differences.csv (lib.report.verdicts.read_differences), whose summary families hold every
    verdict a sentence states; None: no verdicts.
    """
    sentences, rules = [], set()
    models = grid_columns(cfg)
    id_name = cfg["in_distribution"]
    if acc is not None:
        r = best_and_ties(diff, "summary/accuracy_best", acc["summary"], models, metric="accuracy", set="id_test")
        if r:
            rules |= r["rules"]
            text = (f"On the {id_name} test set {model_label(*r['best'])} is the most accurate "
                    f"({r['mean'] * 100:.2f}%)")
            if r["worst"] != r["best"]:
                text += f" and {model_label(*r['worst'])} the least ({r['means'][r['worst']] * 100:.2f}%)"
            if r["rules"] == {"tested"} and len(r["means"]) > 1:
                text += ("; within noise of the best: " + _join(model_label(*m) for m in r["ties"])
                         if r["ties"] else "; every other model is below it beyond noise")
            sentences.append(text + ".")
    scores = [s for s in cfg["scores"] if s == HEADLINE_SCORE] or list(cfg["scores"][:1])
    if det is not None and scores:
        score = scores[0]
        label = SCORE_LABELS.get(score, score)
        per_set, set_means = [], {}
        for ood in cfg["ood_sets"]:
            r = best_and_ties(diff, "summary/auroc_best", det["summary"], models, metric="auroc", set=ood, score=score)
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
                results = [compare(diff, "summary/auroc_oe", (augment, oe), (augment, "baseline"), det["raw"],
                                   metric="auroc", set=ood, score=score)
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
                recovery = _recovery_text(det["summary"], findings, (augment, oe), cfg["ood_sets"], score) \
                    if (augment, "baseline") == BASE_MODEL else ""
                effect.append(f"{_points(np.mean([x['diff'] for x in results]))} with {name} for "
                              f"{AUGMENT_LABELS.get(augment, augment)}{counted}{recovery}")
        if effect:
            sentences.append(f"Averaged over the OOD sets, {label} AUROC changes by " + "; ".join(effect) + ".")
    if acc is not None and "none" in cfg["augment"] and "baseline" in cfg["oe"]:
        changes = []
        for augment in [a for a in cfg["augment"] if a != "none"]:
            r = compare(diff, "summary/accuracy_augment", (augment, "baseline"), ("none", "baseline"), acc["raw"],
                        metric="accuracy", set="id_test")
            if r:
                rules.add(r["rule"])
                changes.append(f"{_points(r['diff'])} for {AUGMENT_LABELS.get(augment, augment)}{_verdict_phrase(r)}")
        if changes:
            sentences.append("Against Base, training augmentation changes test accuracy by " + _join(changes) + ".")
    rule_order = [k for k in ("tested", "single", "absent") if k in rules]
    return {"sentences": sentences, "rules": [RULE_TEXT[k] for k in rule_order]}



def _mean(summary, model, **key):
    rows = summary[(summary["augment"] == model[0]) & (summary["oe"] == model[1])]
    for k, v in key.items():
        rows = rows[rows[k] == v]
    return None if rows.empty or np.isnan(rows["mean"].iloc[0]) else float(rows["mean"].iloc[0])


def _recovery_text(det_summary, findings, model, ood_sets, score):
    """', of which +x points (averaged the same way) only bring Base up to ...' for a change
    of `model` against Base averaged over `ood_sets`; '' when Base failed on none of them."""
    parts, flagged = [], []
    for ood in ood_sets:
        base, method = _mean(det_summary, BASE_MODEL, metric="auroc", set=ood, score=score), \
            _mean(det_summary, model, metric="auroc", set=ood, score=score)
        part = None if base is None or method is None else recovered_part(findings, "auroc", ood, base, method)
        parts.append(part or 0.0)
        if part is not None:
            flagged.append(ood)
    if not flagged:
        return ""
    return (f", of which {_points(np.mean(parts))} only bring Base up to a sound baseline on "
            f"{_join(flagged)}")


FINDING_LABELS = {"auroc": "{set} ({score} AUROC)", "mean_accuracy": "MNIST-C mean accuracy"}


def baseline_warning(cfg, acc, det, mnist_c=None):
    """The paragraph that opens the summary when the Base model is no sound baseline, else None.

    Plain sentences (lib.evaluate.baseline_check.warning_sentences: what is wrong, the likely
    cause, the fix), then per failed metric every model's change against Base, split into
    the part that only brings Base up to a sound baseline's level and the rest."""
    findings = check_baseline(det["summary"], acc["summary"], mnist_c["summary"] if mnist_c else None,
                              in_distribution=cfg["in_distribution"])
    if not findings:
        return None
    sentences = warning_sentences(findings, cfg["train"]["model"])
    for f in findings:
        table = det["summary"] if f["metric"] == "auroc" else mnist_c["summary"]
        key = dict(metric=f["metric"], set=f["set"], **({"score": f["score"]} if f["score"] else {}))
        gains = []
        for model in grid_columns(cfg):
            method = _mean(table, model, **key) if model != BASE_MODEL else None
            if method is not None and method > f["value"]:
                part = recovered_part(findings, f["metric"], f["set"], f["value"], method)
                gains.append(f"{model_label(*model)} {_points(method - f['value'])} ({part * 100:.2f})")
        if gains:
            label = FINDING_LABELS[f["metric"]].format(set=f["set"], score=SCORE_LABELS.get(f["score"], f["score"]))
            sentences.append(f"Gains over Base on {label}, in brackets the part that only brings Base up to a "
                             f"sound baseline's {f['healthy'] * 100:.2f}%: " + "; ".join(gains) + ".")
    return {"sentences": sentences, "findings": findings}


def study_tables(cfg, acc, det, acc_src, det_src, leaks=(), mnist_c=None):
    """The study's two tables, same shape: accuracy by augment; AUROC by set x score x model.

    `mnist_c` is the long_table() of robustness_summary.csv, or None."""
    id_name = cfg["in_distribution"]
    pub_id = "mnist" if id_name == "mnist" else None
    # Columns: each augmentation's model without OE, then the external checkpoints (no published number).
    acc_columns = [(a, "baseline") for a in cfg["augment"]] + grid_columns(cfg)[len(trained_columns(cfg)):]
    acc_pub = {(a, o): published.ACCURACY.get((pub_id, a)) if pub_id and o == "baseline" else None
               for a, o in acc_columns}
    acc_rows = [{"label": f"{id_name} test accuracy", "note": "", "cells": [
        cell(acc, acc_src, published_value=acc_pub[a, o], augment=a, oe=o, metric="accuracy", set="id_test")
        for a, o in acc_columns]}]
    # The published MNIST-C numbers are for the official files; generated corruptions show ours alone.
    official = cfg.get("corruptions", "official") == "official"
    mnist_c_pub = {(a, o): published.ACCURACY.get(("mnist_c", a)) if pub_id and official and o == "baseline" else None
                   for a, o in acc_columns}
    if mnist_c is not None:
        on = ("the official MNIST-C test sets (Zenodo 3239543)" if official else
              f"the 15 MNIST-C corruptions generated offline from the {id_name} test set")
        acc_rows.append({"label": "MNIST-C accuracy (mean over the corruptions)", "note": f"On {on}.", "cells": [
            cell(mnist_c["summary"], mnist_c["source"], published_value=mnist_c_pub[a, o],
                 augment=a, oe=o, metric=MNIST_C_METRIC) for a, o in acc_columns]})
    else:
        acc_rows.append({"label": "MNIST-C accuracy (mean over the corruptions)",
                         "note": "Not in this run: results/tables/robustness_summary.csv is absent.",
                         "cells": [empty_cell(published=published_text(mnist_c_pub[c], True)) for c in acc_columns]})
    columns = grid_columns(cfg)
    auroc_rows = []
    for ood in cfg["ood_sets"]:
        for score in [s for s in ("msp", "xent") if s in cfg["scores"]]:
            auroc_rows.append({"label": f"{set_label(ood, leaks)}, {SCORE_LABELS[score]}", "cells": [
                cell(det, det_src, published_value=published.AUROC.get((ood, score, a, o)) if pub_id else None,
                     augment=a, oe=o, metric="auroc", set=ood, score=score) for a, o in columns]})
    return {"accuracy_header": [model_label(a, o) if a == EXTERNAL_AUGMENT else AUGMENT_LABELS.get(a, a)
                                for a, o in acc_columns], "accuracy_rows": acc_rows,
            "auroc_header": [model_label(a, o) for a, o in columns], "auroc_rows": auroc_rows}


def build(ctx):
    acc, det = long_table(ctx, "accuracy"), long_table(ctx, "detection")
    if acc is None or det is None:
        return None
    cfg = ctx["cfg"]
    mnist_c = long_table(ctx, "robustness_summary")
    study = study_tables(cfg, acc["summary"], det["summary"], acc["source"], det["source"], ctx["leaks"], mnist_c)
    warning = baseline_warning(cfg, acc, det, mnist_c)
    diff = read_differences(input_file(ctx, "differences"))
    reading = summary_reading(cfg, acc, det, ctx["leaks"], warning["findings"] if warning else (), diff)
    detectable_path = input_file(ctx, "detectable")
    detectable = detectable_block(read_detectable(detectable_path), diff,
                                  detectable_path and shown_path(ctx, detectable_path),
                                  lambda metric, s: f"{METRIC_NAMES.get(metric, metric)}, "
                                                    f"{SET_NAMES.get(s, set_label(s, ctx['leaks']))}",
                                  metrics=("accuracy", "auroc"))
    versus = []
    for what, rows in (("accuracy", study["accuracy_rows"]), ("AUROC", study["auroc_rows"])):
        deltas = [float(c["delta"]) for row in rows for c in row["cells"] if c["delta"]]
        if deltas:
            versus.append(f"{np.mean(deltas):+.2f} points in {what} ({len(deltas)} cells)")
    if versus:
        reading["sentences"].append("Against the published study, ours differ on average by " + _join(versus) + ".")
    return {"baseline_warning": warning, "study": study, "reading": reading, "detectable": detectable,
            "published_shown": cfg["in_distribution"] == "mnist", "oe_reference": published.OE_REFERENCE,
            "protocol": protocol_text(cfg)}

