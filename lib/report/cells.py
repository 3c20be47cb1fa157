"""Labels and table cells: how the report names models and sets and shows a number.

    from lib.report.cells import cell, model_label, set_label
    model_label("saltpepper", "oe")                    # 'S&P +OE'
    set_label("fashion_mnist", leaks)                  # 'fashion_mnist †' when seen in training
    c = cell(summary, "results/tables/detection.csv", augment="none", oe="oe", metric="auroc",
             set="gaussian", score="msp")
    c["text"], c["value"], c["source"], c["key"]       # '99.12 (n=1)', '0.9912...', the file, the row

Every number in a table cell carries `value` (the exact number, the cell's data-value),
`source` (the file it came from, relative to the run's working directory: data-source),
`key` (which row of that file, for long tables augment;oe;metric;set;score: data-key)
and `scale` (displayed = value x scale: data-scale), so a reader or a test can trace each
number back to a file (workflow/templates/macros.html.j2 writes the attributes).
"""
import numpy as np

from lib.layout import EXTERNAL_AUGMENT

AUGMENT_LABELS = {"none": "Base", "saltpepper": "S&P", "pixmix": "PixMix"}
OE_LABELS = {"baseline": "", "oe": "+OE", "oe_tune": "+OE tune"}
SCORE_LABELS = {"msp": "MSP", "xent": "cross-entropy", "energy": "energy", "maxlogit": "max logit",
                "odin": "ODIN", "mahalanobis": "Mahalanobis", "knn": "kNN", "vim": "ViM", "react": "ReAct",
                "gen": "GEN"}
# Metrics that are fractions and shown as percentages; any other metric is shown as is.
PERCENT_METRICS = {"accuracy", "error", "auroc", "aupr_in", "aupr_out", "fpr95", "mean_accuracy",
                   "non_overlap_mean", "mce", "ece", "rms_calibration_error", "rms"}
SUMMARY_KEYS = ("augment", "oe", "metric", "set", "score")
HEADLINE_SCORE = "msp"  # the score the summary's reading and the detection figures show first
LEAK_MARK = "†"  # dagger after a test set that was seen in training


NOT_TRAINED_HERE = "not trained here"


def model_label(augment, oe):
    if augment == EXTERNAL_AUGMENT:  # a checkpoint from config external_models: its name
        return f"{oe} ({NOT_TRAINED_HERE})"
    return (AUGMENT_LABELS.get(augment, augment) + " " + OE_LABELS.get(oe, oe)).strip()


def set_label(name, leaks):
    return f"{name} {LEAK_MARK}" if name in leaks else name


def trained_columns(cfg):
    """(augment, oe) of every model trained here."""
    return [(a, o) for a in cfg["augment"] for o in cfg["oe"]]


def grid_columns(cfg):
    """(augment, oe) of every column of the tables: the models trained here, then the
    external checkpoints (config external_models)."""
    return trained_columns(cfg) + [(EXTERNAL_AUGMENT, name) for name in cfg.get("external_models", {})]


def protocol_text(cfg):
    """The sentence that says how every OOD number of this run was measured (config evaluation)."""
    ev = cfg.get("evaluation", {"protocol": "full"})
    if ev["protocol"] == "oe_paper":
        return (f"Protocol oe_paper (the Outlier Exposure authors'): each OOD set scored on "
                f"{ev['draws']} seeded random draws of {ev['ood_fraction']:g} × the ID test size "
                f"against the whole ID test set; every OOD number is the mean over the draws "
                f"(its std over the draws is in detection.csv as <metric>_draw_std).")
    return "Protocol full: every ID test image against every image of each OOD set."


def fmt_cell(mean, std, n, percent=True):
    """'99.12 ± 0.31 (n=3)'; a single seed has no std, shown as '99.12 (n=1)'."""
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "—"
    scale = 100.0 if percent else 1.0
    text = f"{mean * scale:.2f}"
    if n and n > 1 and std is not None and not np.isnan(std):
        text += f" ± {std * scale:.2f}"
    return text + f" (n={int(n)})"


def key_text(**key):
    """The data-key of a cell: 'augment=none;oe=baseline;metric=auroc;set=gaussian;score=msp'."""
    return ";".join(f"{k}={v}" for k, v in key.items())


def parse_key(text):
    return dict(part.split("=", 1) for part in text.split(";")) if text else {}


def published_text(value, percent):
    """A published number as the cell shows it beside ours ('' when there is none)."""
    if value is None:
        return ""
    return f"{value * (100 if percent else 1):.2f}"


def empty_cell(source="", key="", scale=100, published=""):
    """A cell without a number of ours: shown as '—', with no data-value."""
    return {"text": "—", "value": "", "std": "", "n": "", "scale": scale, "key": key, "source": source,
            "published": published, "delta": ""}


def cell(summary, source, percent=True, published_value=None, **key):
    """One summarised number (mean ± std, n over seeds) where `summary` matches every `key`."""
    # One boolean mask over the columns, not a filtered copy of the table per key: a report
    # makes about a thousand cells from the same few tables.
    match = np.ones(len(summary), dtype=bool)
    for k, v in key.items():
        match &= (summary[k] == v).to_numpy(dtype=bool)
    hits = np.flatnonzero(match)
    scale = 100 if percent else 1
    if hits.size == 0:
        return empty_cell(source, key_text(**key), scale, published_text(published_value, percent))
    r = summary.iloc[hits[0]]
    delta = ""
    if published_value is not None and not np.isnan(r["mean"]):
        delta = f"{(r['mean'] - published_value) * scale:+.2f}"
    return {"text": fmt_cell(r["mean"], r["std"], r["n"], percent), "value": repr(float(r["mean"])),
            "std": "" if np.isnan(r["std"]) else repr(float(r["std"])), "n": int(r["n"]), "scale": scale,
            "key": key_text(**{k: r[k] for k in SUMMARY_KEYS}), "source": source,
            "published": published_text(published_value, percent), "delta": delta}


def plain_cell(value, text, source, key):
    """A number from a file that is not a long table (train logs, benchmarks), shown as `text`."""
    return {"text": text, "value": repr(float(value)), "std": "", "n": "", "scale": 1, "key": key,
            "source": source, "published": "", "delta": ""}
