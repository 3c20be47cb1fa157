"""Near- and far-OOD means: the per-set rows of a detection table averaged over each group's sets.

    from lib.evaluate.groups import group_means
    groups = {"fashion_mnist": "near", "notmnist": "near", "gaussian": "far"}  # lib.data.registry.ood_groups(cfg)
    means = group_means(detection_df, groups, "results/tables/detection.csv")
    groups_job("results/tables/detection.csv", "results/tables/full_spectrum.csv", groups,
               "results/tables/detection_groups.csv", "results/tables/full_spectrum_groups.csv", "groups.log")

The mean is taken per model, seed, score and metric over the sets of the group (one value per
seed), so that lib.evaluate.aggregate.summarize then gives mean ± std over the seeds exactly
as it does for a per-set cell: the std is the seeds' spread of the group mean. A group mean is
written only where every set of the group has its row; else it would average different sets
for different models. Rows have the long columns of the input, `set` = the group name (near,
far) and `source` = the table averaged; counts (n_id, n_ood, n_shifted) are not averaged.
"""
import pandas as pd

from lib.common import job_logger
from lib.evaluate.aggregate import COLUMNS, write_csv_atomic

GROUP_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def group_means(df, groups, source):
    """Long rows (COLUMNS) of each group's mean over its sets; `groups` maps set -> group."""
    rows = df[df["metric"].isin(GROUP_METRICS) & df["set"].isin(groups)]
    rows = rows.assign(group=rows["set"].map(groups), score=rows["score"].fillna(""))
    sizes = pd.Series(groups).value_counts()
    keys = ["augment", "oe", "seed", "metric", "score", "group"]
    means = rows.groupby(keys, sort=False).agg(value=("value", "mean"), sets=("set", "nunique")).reset_index()
    means = means[means["sets"] == means["group"].map(sizes)]
    out = means.rename(columns={"group": "set"}).assign(source=source)
    return out[COLUMNS].sort_values(["metric", "set", "score", "augment", "oe", "seed"], kind="stable") \
        .reset_index(drop=True)


def groups_job(detection_csv, full_spectrum_csv, groups, detection_out, full_spectrum_out, log_path):
    """The group_means rule: each table's group means beside it (in Snakemake's process: pandas)."""
    log = job_logger(log_path)
    for table, out in ((detection_csv, detection_out), (full_spectrum_csv, full_spectrum_out)):
        means = group_means(pd.read_csv(table, keep_default_na=False, na_values={"value": [""]}), groups, table)
        write_csv_atomic(means, out)
        log.info("%s: %d rows (groups %s)", out, len(means), sorted(set(groups.values())))
