"""Each model's difference to none/baseline on the headline metrics, with a 95% interval.

    python -m lib.evaluate.differences --tables results/tables --out results/tables/differences.csv \
        [--logits results/logits] [--n-boot 1000] [--seed 0]

    from lib.evaluate.differences import differences, read_tables
    df = differences(read_tables("results/tables"), "results/logits")

Headline metrics, one row per model other than the baseline and per (metric, set, score):

    accuracy  id_test                                     accuracy.csv
    auroc     every OOD set x every score                 detection.csv
    ece       id_test, uncalibrated and temperature_scaled   calibration.csv
    accuracy  mnist_c (mean over corruptions)             calibration.csv, when MNIST-C was evaluated
    ece       mnist_c, uncalibrated and temperature_scaled   calibration.csv, idem

Intervals are for (model - baseline), level 95%:
- with two or more seeds that both models have, a paired t interval over those seeds
  (lib.evaluate.stats.paired_difference_ci) of the per-seed values in the CSV tables;
- with one seed, a percentile bootstrap over test examples (lib.evaluate.stats.bootstrap_difference_ci)
  of the per-example arrays in the two models' logit files: the same examples are drawn for
  both models; for AUROC the ID and the OOD examples are resampled separately, for MNIST-C
  each corruption on its own, so every replicate keeps the set sizes.
The `method` column says which, `n` counts seeds (paired) or test examples (bootstrap),
and `source` names the CSV or the logit files the numbers came from.
"""
import argparse
import logging
import os

import numpy as np
import pandas as pd

from lib import layout
from lib.evaluate.aggregate import write_csv_atomic
from lib.evaluate.calibration import confidence_and_correct
from lib.common import derive_seed, load_npz, setup_logging
from lib.evaluate.detection import load_train_stats
from lib.evaluate.metrics import auroc_pair_count, ece
from lib.evaluate.scores import compute_score
from lib.evaluate.stats import bootstrap_difference_ci, paired_difference_ci

BASELINE = ("none", "baseline")
DIFFERENCE_COLUMNS = ["augment", "oe", "metric", "set", "score", "diff", "low", "high", "method", "n", "source"]
TABLES = ("accuracy", "detection", "calibration")
LEVEL = 0.95

log = logging.getLogger("mnist_safety")


def read_tables(tables_dir):
    """{name: (DataFrame, path)} for accuracy.csv, detection.csv, calibration.csv when present."""
    tables = {}
    for name in TABLES:
        path = os.path.join(tables_dir, f"{name}.csv")
        if os.path.exists(path):
            df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"score": str})
            tables[name] = (df.assign(score=df["score"].fillna("")), path)
    return tables


def headlines(tables):
    """The headline metrics present in `tables`: dicts of metric, set, score (as reported),
    the table and the rows (`where`) they come from."""
    out = []
    if "accuracy" in tables:
        out.append(dict(metric="accuracy", set="id_test", score="", table="accuracy",
                        where=dict(metric="accuracy", set="id_test")))
    if "detection" in tables:
        det = tables["detection"][0]
        pairs = det.loc[det["metric"] == "auroc", ["set", "score"]].drop_duplicates()
        for ood_set, score in pairs.itertuples(index=False):
            out.append(dict(metric="auroc", set=ood_set, score=score, table="detection",
                            where=dict(metric="auroc", set=ood_set, score=score)))
    if "calibration" in tables:
        cal = tables["calibration"][0]
        for set_name in ("id_test", "mnist_c"):
            if not (cal["set"] == set_name).any():
                continue
            if set_name == "mnist_c":
                out.append(dict(metric="accuracy", set="mnist_c", score="", table="calibration",
                                where=dict(metric="accuracy", set="mnist_c", score="uncalibrated")))
            for variant in ("uncalibrated", "temperature_scaled"):
                out.append(dict(metric="ece", set=set_name, score=variant, table="calibration",
                                where=dict(metric="ece", set=set_name, score=variant)))
    return out


def per_seed_values(df, where, augment, oe):
    """{seed: value} of one model for the rows matching `where`."""
    rows = df[(df["augment"] == augment) & (df["oe"] == oe)]
    for key, value in where.items():
        rows = rows[rows[key] == value]
    rows = rows.dropna(subset=["value"])
    if rows["seed"].duplicated().any():
        raise ValueError(f"{augment}/{oe}: more than one value per seed for {where}; the table is malformed")
    return dict(zip(rows["seed"].astype(int), rows["value"].astype(float)))


def _temperature(tables, augment, oe, seed):
    values = per_seed_values(tables["calibration"][0], dict(metric="temperature", set="id_val"), augment, oe)
    if seed not in values:
        raise ValueError(f"calibration.csv has no temperature for {augment}/{oe}/seed{seed}; rerun the calibrate rule")
    return values[seed]


def _corruptions(tables, augment, oe, seed):
    cal = tables["calibration"][0]
    rows = cal[(cal["augment"] == augment) & (cal["oe"] == oe) & (cal["seed"] == seed)
               & cal["set"].str.startswith(layout.MNISTC_PREFIX)]
    return sorted(rows["set"].unique())


def _labelled(path):
    out = load_npz(path, required=("logits", "labels"))
    return out["logits"], out["labels"]


def bootstrap_inputs(headline, logit_dir, tables, augment, oe, seed):
    """(groups, statistic, files) of one model for the bootstrap of `headline`.

    groups: a tuple of per-example arrays (each resampled on its own); statistic(*groups)
    gives the headline number; files: the logit files read.
    """
    metric, set_name, score = headline["metric"], headline["set"], headline["score"]
    id_test = layout.npz_in(logit_dir, "id_test")
    if metric == "auroc":
        ood = layout.npz_in(logit_dir, set_name)
        stats, files = None, [id_test, ood]
        if score == "mahalanobis":
            files.append(os.path.join(logit_dir, layout.MAHALANOBIS_STATS))
            stats = load_train_stats(files[-1])
        groups = (compute_score(score, load_npz(id_test), stats), compute_score(score, load_npz(ood), stats))
        return groups, auroc_pair_count, files
    if set_name == "id_test":
        files = [id_test]
    else:
        files = [layout.npz_in(logit_dir, name) for name in _corruptions(tables, augment, oe, seed)]
        if not files:
            raise ValueError(f"no MNIST-C sets in calibration.csv for {augment}/{oe}/seed{seed}")
    temperature = _temperature(tables, augment, oe, seed) if score == "temperature_scaled" else 1.0
    pairs = [confidence_and_correct(*_labelled(f), temperature) for f in files]
    if metric == "accuracy":
        return tuple(correct for _, correct in pairs), _mean_of_means, files
    if metric == "ece":
        return tuple(np.column_stack(p) for p in pairs), _mean_ece, files
    raise ValueError(f"no per-example bootstrap for headline metric {metric!r} on {set_name!r}")


def _mean_of_means(*groups):
    return float(np.mean([g.mean() for g in groups]))


def _mean_ece(*groups):
    # Each group holds (confidence, correct) columns of one set; MNIST-C's ECE is their mean.
    return float(np.mean([ece(g[:, 0], g[:, 1]) for g in groups]))


def _models(tables):
    frames = [df[["augment", "oe"]] for df, _ in tables.values()]
    pairs = pd.concat(frames).drop_duplicates() if frames else pd.DataFrame(columns=["augment", "oe"])
    return [tuple(p) for p in pairs.itertuples(index=False)]


def differences(tables, logits_root, baseline=BASELINE, n_boot=1000, seed=0):
    """DataFrame with DIFFERENCE_COLUMNS: every model minus `baseline` on every headline."""
    rows = []
    models = _models(tables)
    if baseline not in models:
        log.warning("no %s/%s model in the tables: no differences to report", *baseline)
        return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)
    for headline in headlines(tables):
        df, table_path = tables[headline["table"]]
        base_values = per_seed_values(df, headline["where"], *baseline)
        for augment, oe in models:
            if (augment, oe) == baseline:
                continue
            model_values = per_seed_values(df, headline["where"], augment, oe)
            seeds = sorted(set(model_values) & set(base_values))
            key = dict(augment=augment, oe=oe, metric=headline["metric"], set=headline["set"], score=headline["score"])
            if len(seeds) >= 2:
                ci = paired_difference_ci([model_values[s] for s in seeds], [base_values[s] for s in seeds], LEVEL)
                source = table_path
            elif len(seeds) == 1:
                s = seeds[0]
                model_dir = os.path.join(logits_root, layout.model_part(augment, oe, s))
                base_dir = os.path.join(logits_root, layout.model_part(*baseline, s))
                model_groups, statistic, model_files = bootstrap_inputs(headline, model_dir, tables, augment, oe, s)
                base_groups, _, base_files = bootstrap_inputs(headline, base_dir, tables, *baseline, s)
                ci = bootstrap_difference_ci(model_groups, base_groups, statistic, n_boot=n_boot, level=LEVEL,
                                             seed=derive_seed(seed, "bootstrap", *key.values(), s))
                source = ";".join(model_files + base_files)
            else:
                continue
            rows.append(dict(**key, diff=ci["diff"], low=ci["low"], high=ci["high"], method=ci["method"],
                             n=ci["n"], source=source))
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


def main(argv=None):
    p = argparse.ArgumentParser(description="Differences to none/baseline with 95% intervals.")
    p.add_argument("--tables", required=True, help="folder with accuracy.csv, detection.csv, calibration.csv")
    p.add_argument("--logits", help="the folder of every model's logits (per-example arrays for the bootstrap); "
                   "default: the logits folder beside --tables, as lib.layout places it")
    p.add_argument("--out", required=True)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log")
    a = p.parse_args(argv)
    setup_logging(a.log)
    # Beside --tables and relative when it is, so the `source` column names files as the rules do.
    tables = os.path.normpath(a.tables)
    if os.path.basename(tables) in (os.curdir, os.pardir):  # "." or "..": the folder needs its name
        tables = os.path.abspath(tables)
    logits = a.logits or layout.logits_root(os.path.dirname(tables))
    df = differences(read_tables(a.tables), logits, n_boot=a.n_boot, seed=a.seed)
    write_csv_atomic(df, a.out)
    log.info("%d differences -> %s", len(df), a.out)


if __name__ == "__main__":
    main()
