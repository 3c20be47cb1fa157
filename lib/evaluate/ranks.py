"""Ranks over data sets: a Friedman test and the Nemenyi critical difference (Demsar 2006).

    from lib.evaluate.ranks import rank_tables
    from lib.evaluate.differences import read_tables
    df = rank_tables(read_tables("results/tables"), score="msp", groups={"gaussian": "far", ...})
    ranks_job("results/tables/detection.csv", "results/tables/calibration.csv", "msp",
              "results/tables/ranks.csv", "results/logs/ranks.log", groups,
              full_spectrum_csv="results/tables/full_spectrum.csv")           # the ranks rule

The comparisons (COMPARISONS), each with data sets as blocks, ranked within each block
(rank 1 = best; ties share their mean rank), from the mean over seeds of each value:
    models_ood     models over the OOD sets, AUROC of the headline score (detection.csv)
    scores_ood     scores over the OOD sets, AUROC averaged over the models (detection.csv)
    scores_near    the same over the near-OOD sets only (`groups`, lib.data.registry.ood_groups)
    scores_far     the same over the far-OOD sets only
    scores_full_spectrum  the same with full-spectrum AUROC (full_spectrum.csv: the ID test set
                   and its MNIST-C shifted copy against each OOD set, lib.evaluate.full_spectrum)
    models_mnistc  models over the MNIST-C corruptions, accuracy (calibration.csv)
The score rankings pool the models: each model's AUROC (mean over seeds) weighs the same in
a set's mean, and the scores are ranked on that mean.
A data set some item lacks is left out. Each row: the item, its mean rank and mean value,
k items, n_blocks data sets, the Friedman chi2 and p (scipy.stats.friedmanchisquare; NaN
with fewer than three items or two sets) and the critical difference CD at alpha
(lib.evaluate.stats.nemenyi_cd): two items whose mean ranks differ by more than CD differ.
"""
import numpy as np
import pandas as pd

from lib.common import job_logger
from lib.evaluate import stats
from lib.evaluate.aggregate import write_csv_atomic
from lib import layout
from lib.evaluate.differences import headline_score, read_table

ALPHA = 0.05
COMPARISONS = {
    "models_ood": "models over the OOD sets (AUROC, {score})",
    "scores_ood": "scores over the OOD sets (AUROC, mean over the models)",
    "scores_near": "scores over the near-OOD sets (AUROC, mean over the models)",
    "scores_far": "scores over the far-OOD sets (AUROC, mean over the models)",
    "scores_full_spectrum": "scores over the OOD sets (full-spectrum AUROC, mean over the models)",
    "models_mnistc": "models over the MNIST-C corruptions (accuracy)",
}
RANK_COLUMNS = ["comparison", "item", "mean_rank", "mean_value", "k", "n_blocks", "chi2", "p", "cd", "alpha", "blocks"]


def _model(df):
    return df["augment"] + "/" + df["oe"]


# The score comparisons over one OOD group: comparison -> group (lib.data.registry.OOD_GROUPS).
GROUP_COMPARISONS = {"scores_near": "near", "scores_far": "far"}


def block_values(tables, comparison, score=None, groups=None):
    """[blocks x items] DataFrame of mean values (over seeds, and over models for the score
    comparisons); `groups` ({set: group}) picks the sets of scores_near and scores_far."""
    if comparison == "models_mnistc":
        if "calibration" not in tables:
            return None
        cal = tables["calibration"][0]
        rows = cal[(cal["metric"] == "accuracy") & (cal["score"] == "uncalibrated") & cal["set"].str.startswith(layout.MNISTC_PREFIX)]
        rows = rows.assign(block=rows["set"].map(layout.corruption_of), item=_model(rows))
    else:
        table = "full_spectrum" if comparison == "scores_full_spectrum" else "detection"
        if table not in tables:
            return None
        det = tables[table][0]
        rows = det[det["metric"] == "auroc"]
        if comparison in GROUP_COMPARISONS:
            group = GROUP_COMPARISONS[comparison]
            rows = rows[rows["set"].map(groups or {}) == group]
        if comparison == "models_ood":
            rows = rows[rows["score"] == score].assign(block=lambda d: d["set"], item=_model)
        else:  # every model weighs the same: mean over seeds first, then over models
            rows = rows.groupby(["set", "score", "augment", "oe"], as_index=False)["value"].mean()
            rows = rows.assign(block=rows["set"], item=rows["score"])
    if rows.empty:
        return None
    wide = rows.groupby(["block", "item"], sort=False)["value"].mean().unstack("item")
    return wide.dropna()


def rank_rows(comparison, values, alpha=ALPHA):
    """Rows of RANK_COLUMNS for one comparison's [blocks x items] values; [] when fewer than two items."""
    if values is None or values.shape[1] < 2 or values.shape[0] < 1:
        return []
    result = stats.friedman(values.to_numpy())
    cd = stats.nemenyi_cd(result["k"], result["n_blocks"], alpha)
    blocks = ";".join(map(str, values.index))
    return [dict(comparison=comparison, item=item, mean_rank=float(rank), mean_value=float(values[item].mean()),
                 k=result["k"], n_blocks=result["n_blocks"], chi2=result["chi2"], p=result["p"], cd=cd, alpha=alpha,
                 blocks=blocks)
            for item, rank in zip(values.columns, result["mean_ranks"])]


def rank_tables(tables, score=None, alpha=ALPHA, groups=None):
    """Every comparison of COMPARISONS the tables allow, as one DataFrame (RANK_COLUMNS);
    without `groups` the group comparisons are left out."""
    if score is None and "detection" in tables:
        score = headline_score(dict.fromkeys(tables["detection"][0]["score"]))
    rows = []
    for comparison in COMPARISONS:
        if comparison in GROUP_COMPARISONS and not groups:
            continue
        rows += rank_rows(comparison, block_values(tables, comparison, score, groups), alpha)
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


def ranks_job(detection_csv, calibration_csv, score, out_csv, log_path, groups=None, full_spectrum_csv=None):
    """The ranks rule: detection.csv and calibration.csv -> ranks.csv (in Snakemake's process:
    milliseconds of pandas and scipy)."""
    log = job_logger(log_path)
    paths = (("detection", detection_csv), ("calibration", calibration_csv), ("full_spectrum", full_spectrum_csv))
    tables = {name: (read_table(path), path) for name, path in paths if path}
    df = rank_tables(tables, score, groups=groups)
    write_csv_atomic(df, out_csv)
    for comparison, part in df.groupby("comparison", sort=False):
        first = part.iloc[0]
        log.info("%s: k=%d, N=%d, Friedman p=%.3g, CD=%.3f; mean ranks %s", comparison, first["k"], first["n_blocks"],
                 first["p"], first["cd"], dict(zip(part["item"], np.round(part["mean_rank"], 2))))
