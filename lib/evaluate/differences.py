"""Differences between models on the headline metrics: two-level bootstrap intervals,
Holm-corrected p-values, verdicts, and the smallest difference the study can detect.

    python -m lib.evaluate.differences --tables results/tables --headline-score msp \
        --out results/tables/differences.csv --detectable-out results/tables/detectable.csv \
        [--logits results/logits] [--scores results/scores] [--n-boot 200] [--seed 0]

    from lib.evaluate.differences import compare_study, read_tables
    out = compare_study(read_tables("results/tables"), "results/logits", "results/scores")
    out["differences"], out["detectable"]          # DataFrames (DIFFERENCE_COLUMNS, DETECTABLE_COLUMNS)

Headline metrics (metric, set, score), each computed again from the per-example files:

    accuracy  id_test                                   results/logits/.../id_test.npz
    auroc     every OOD set x every score               results/scores/.../<set>/<score>.npz
    ece       id_test, uncalibrated and temperature_scaled   id_test.npz; T from calibration.csv
    accuracy  mnist_c (mean over corruptions)           results/logits/.../mnistc_<c>.npz
    ece       mnist_c, uncalibrated and temperature_scaled   idem

Every row of differences.csv is one comparison, model (augment, oe) minus reference
(ref_augment, ref_oe), in one family of comparisons (FAMILIES): the differences table
compares every model with Base, one family per metric; each sentence of the report's summary
that calls differences real or noise draws on its own family. A comparison in two families is
two rows with the same interval and different adjusted p-values. Columns: diff, the 95%
interval (low, high), p (two-sided, diff = 0), p_holm (Holm over the row's family, of
family_size comparisons), verdict, the two parts of the standard error, mdd (the smallest
detectable difference of the row's metric and set, detectable.csv), n_seeds (seeds both
models have, paired), n_examples (test examples per seed), method and source (the per-example
files). Intervals and p-values: lib.evaluate.stats (two-level bootstrap over seeds and test
examples, the same example draw for every model and seed).

verdict: "beyond noise" when p_holm < ALPHA and |diff| >= mdd (a difference smaller than the
study can detect is never called real); "within noise" otherwise; with one seed,
"untested (one seed)": the interval covers the test examples only, not training randomness.

detectable.csv, one row per (metric, set): the seed-to-seed standard deviation of the
per-seed differences and the example part of the standard error, pooled (root mean square)
over the table's comparisons with Base, and the smallest difference detectable with the
study's seeds (power POWER, two-sided ALPHA; lib.evaluate.stats.detectable_difference) and
with unlimited seeds (floor).
"""
import argparse
import logging
import os
from collections import Counter

import numpy as np
import pandas as pd

from lib import layout
from lib.common import derive_seed, load_npz, setup_logging
from lib.evaluate import stats
from lib.evaluate.aggregate import write_csv_atomic
from lib.evaluate.calibration import confidence_and_correct
from lib.evaluate.detection import load_example_scores
from lib.evaluate.scores import headline_score

BASELINE = ("none", "baseline")
ALPHA = 0.05
POWER = 0.8
TABLES = ("accuracy", "detection", "calibration")
FAMILIES = {
    "table/accuracy": "every model against Base on accuracy (ID test, MNIST-C): the differences table's accuracy rows",
    "table/auroc": "every model against Base on AUROC, every OOD set and score: the differences table's AUROC rows",
    "table/ece": "every model against Base on ECE, before and after temperature scaling: the table's ECE rows",
    "summary/accuracy_best": "the summary's accuracy sentence: every model against the most accurate one",
    "summary/auroc_best": "the summary's best-AUROC sentence: on each OOD set, every model against the best one "
                          "(headline score)",
    "summary/auroc_oe": "the summary's Outlier Exposure sentence: each OE variant against the same augmentation "
                        "without OE, on every OOD set (headline score)",
    "summary/accuracy_augment": "the summary's augmentation sentence: each augmentation (no OE) against Base, "
                                "ID accuracy",
}
DIFFERENCE_COLUMNS = ["family", "augment", "oe", "ref_augment", "ref_oe", "metric", "set", "score", "diff", "low",
                      "high", "p", "p_holm", "family_size", "verdict", "se_seeds", "se_examples", "mdd", "n_seeds",
                      "n_examples", "n_boot", "method", "source"]
DETECTABLE_COLUMNS = ["metric", "set", "n_seeds", "n_comparisons", "seed_sd", "example_se", "mdd", "floor", "alpha",
                      "power"]
BEYOND, WITHIN, UNTESTED = "beyond noise", "within noise", "untested (one seed)"

log = logging.getLogger("mnist_safety")


def read_table(path):
    """A long-format table with `score` as text ("" where empty) and a set called "NA" kept a name."""
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"score": str})
    return df.assign(score=df["score"].fillna(""))


def read_tables(tables_dir, names=TABLES):
    """{name: (DataFrame, path)} for accuracy.csv, detection.csv, calibration.csv when present."""
    paths = {name: os.path.join(tables_dir, f"{name}.csv") for name in names}
    return {name: (read_table(path), path) for name, path in paths.items() if os.path.exists(path)}


def headlines(tables):
    """The headline metrics present in `tables`: dicts of metric, set, score (as reported),
    the table and the rows (`where`) that say which models and seeds have them."""
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


def _models(tables):
    frames = [df[["augment", "oe"]] for df, _ in tables.values()]
    pairs = pd.concat(frames).drop_duplicates() if frames else pd.DataFrame(columns=["augment", "oe"])
    return [tuple(p) for p in pairs.itertuples(index=False)]


def _units(tables, headline, models):
    """[(augment, oe, seed)] that have the headline in its table."""
    rows = tables[headline["table"]][0]
    for key, value in headline["where"].items():
        rows = rows[rows[key] == value]
    have = {(a, o, int(s)) for a, o, s in rows.dropna(subset=["value"])[["augment", "oe", "seed"]].itertuples(index=False)}
    return [u for a, o in models for u in sorted(x for x in have if x[:2] == (a, o))]


def _temperature(tables, augment, oe, seed):
    values = per_seed_values(tables["calibration"][0], dict(metric="temperature", set="id_val"), augment, oe)
    if seed not in values:
        raise ValueError(f"calibration.csv has no temperature for {augment}/{oe}/seed{seed}; rerun the calibrate rule")
    return values[seed]


def _corruptions(tables, unit):
    augment, oe, seed = unit
    cal = tables["calibration"][0]
    rows = cal[(cal["augment"] == augment) & (cal["oe"] == oe) & (cal["seed"] == seed)
               & cal["set"].str.startswith(layout.MNISTC_PREFIX)]
    return sorted(rows["set"].unique())


def _labelled(path):
    # only these two arrays: id_test.npz also holds the penultimate features, tens of MB per model
    out = load_npz(path, required=("logits", "labels"), names=("logits", "labels"))
    return out["logits"], out["labels"]


def _model_dir(root, unit):
    """One model's folder under a per-model root (results/logits, results/scores)."""
    return os.path.join(root, layout.model_part(*unit))


class Draws:
    """The example draw of each test set, made once: the same for every headline, model and seed."""

    def __init__(self, seed, n_boot):
        self.seed, self.n_boot, self.made = seed, n_boot, {}

    def __call__(self, set_name, n):
        if (set_name, n) not in self.made:
            rng = np.random.default_rng(derive_seed(self.seed, "bootstrap", set_name))
            self.made[(set_name, n)] = stats.resample_counts(n, self.n_boot, rng)
        return self.made[(set_name, n)]


def _calibration_groups(files, temperatures):
    """Per unit: correct [n], and (confidence, correct) [n, 2] uncalibrated and temperature-scaled."""
    out = []
    for path, temperature in zip(files, temperatures):
        logits, labels = _labelled(path)
        confidence, correct = confidence_and_correct(logits, labels)
        scaled, _ = confidence_and_correct(logits, labels, temperature)
        out.append({"accuracy": correct, "uncalibrated": np.column_stack([confidence, correct]),
                    "temperature_scaled": np.column_stack([scaled, correct])})
    return out


def _set_values(groups, counts):
    """{key: (observed [K], replicates [B, K])} for accuracy and the two ECE variants of one set."""
    return {key: stats.statistic_replicates(statistic, [(g[key],) for g in groups], [counts])
            for key, statistic in (("accuracy", "mean"), ("uncalibrated", "ece"), ("temperature_scaled", "ece"))}


def _check_sizes(score, sets, pairs, done):
    """Every model's scores must come from the same test images: compare with the first model's."""
    first = next(iter(done.values()), {})
    for s, (id_scores, ood_scores) in zip(sets, pairs):
        if s in first and first[s][2] != len(id_scores) + len(ood_scores):
            raise ValueError(f"{s}/{score}: the models' per-example scores differ in size ({len(id_scores)} + "
                             f"{len(ood_scores)} vs {first[s][2]} examples); every model must be scored on the same "
                             "test images (rerun the score rule)")


def headline_values(tables, logits_root, scores_root, models, n_boot=stats.N_BOOT, seed=0):
    """{(metric, set, score): dict(units, observed [K], replicates [B, K], n_examples, files, also)}.

    Every unit (model and seed) of a headline is resampled with the same example draws. files:
    {unit: the per-example files read}; also: the other files the numbers depend on (the
    temperatures of calibration.csv)."""
    out, draw = {}, Draws(seed, n_boot)
    by_key = {(h["metric"], h["set"], h["score"]): h for h in headlines(tables)}
    has_cal = "calibration" in tables
    # ID test set: accuracy and ECE from the same logits
    id_keys = [k for k in by_key if k[1] == "id_test"]
    if id_keys:
        units = sorted(set.union(*(set(_units(tables, by_key[k], models)) for k in id_keys)))
        files = [layout.npz_in(_model_dir(logits_root, u), "id_test") for u in units]
        temps = [_temperature(tables, *u) if has_cal and ("ece", "id_test", "temperature_scaled") in by_key else 1.0
                 for u in units]
        groups = _calibration_groups(files, temps)
        values = _set_values(groups, draw("id_test", len(groups[0]["accuracy"])))
        for key in id_keys:
            metric, _, variant = key
            obs, reps = values["accuracy" if metric == "accuracy" else variant]
            has_it = set(_units(tables, by_key[key], models))
            keep = [i for i, u in enumerate(units) if u in has_it]
            out[key] = dict(units=[units[i] for i in keep], observed=obs[keep], replicates=reps[:, keep],
                            n_examples=len(groups[0]["accuracy"]), files=dict(zip(units, ([f] for f in files))),
                            also=[tables["calibration"][1]] if metric == "ece" else [])
    # MNIST-C: each corruption drawn on its own; accuracy and ECE are means over corruptions
    c_keys = [k for k in by_key if k[1] == "mnist_c"]
    if c_keys:
        units = _units(tables, by_key[("accuracy", "mnist_c", "")], models)
        corruptions = {tuple(_corruptions(tables, u)) for u in units}
        if len(corruptions) != 1 or not next(iter(corruptions)):
            raise ValueError(f"the models' MNIST-C corruptions in calibration.csv differ or are missing "
                             f"({sorted(corruptions)}); rerun the calibrate rule for every model")
        names = next(iter(corruptions))
        temps = [_temperature(tables, *u) for u in units]
        sums, n_examples = {}, 0
        for name in names:
            groups = _calibration_groups([layout.npz_in(_model_dir(logits_root, u), name) for u in units],
                                         temps)
            n_examples += len(groups[0]["accuracy"])
            for key, (obs, reps) in _set_values(groups, draw(name, len(groups[0]["accuracy"]))).items():
                total = sums.get(key, (0.0, 0.0))
                sums[key] = (total[0] + obs, total[1] + reps)
        for key in c_keys:
            metric, _, variant = key
            obs, reps = sums["accuracy" if metric == "accuracy" else variant]
            out[key] = dict(units=units, observed=obs / len(names), replicates=reps / len(names), n_examples=n_examples,
                            files={u: [layout.npz_in(_model_dir(logits_root, u), name) for name in names] for u in units},
                            also=[tables["calibration"][1]])
    # AUROC: per model and score, the ID draw's cumulative counts serve every OOD set
    auroc_keys = [k for k in by_key if k[0] == "auroc"]
    for score in dict.fromkeys(k[2] for k in auroc_keys):
        keys = [k for k in auroc_keys if k[2] == score]
        units = {k: _units(tables, by_key[k], models) for k in keys}
        per_unit = {}
        for unit in dict.fromkeys(u for k in keys for u in units[k]):
            sets = [k[1] for k in keys if unit in units[k]]
            pairs = [load_example_scores(layout.npz_in(os.path.join(_model_dir(scores_root, unit), s), score)) for s in sets]
            _check_sizes(score, sets, pairs, per_unit)
            observed, reps = stats.auroc_replicates(pairs[0][0], draw("id_test", len(pairs[0][0])),
                                                    [o for _, o in pairs], [draw(s, len(o)) for s, (_, o) in zip(sets, pairs)])
            per_unit[unit] = {s: (observed[i], reps[:, i], len(pairs[0][0]) + len(o))
                              for i, (s, (_, o)) in enumerate(zip(sets, pairs))}
        for key in keys:
            found = [per_unit[u][key[1]] for u in units[key]]
            out[key] = dict(units=units[key], observed=np.array([f[0] for f in found]),
                            replicates=np.stack([f[1] for f in found], axis=1), n_examples=found[0][2],
                            files={u: [layout.npz_in(os.path.join(_model_dir(scores_root, u), key[1]), score)]
                                   for u in units[key]}, also=[])
    return out


# ---- which comparisons ------------------------------------------------------------------


def _mean_of(value, model):
    return float(np.mean([v for u, v in zip(value["units"], value["observed"]) if u[:2] == model]))


def _best(value, models):
    present = [m for m in models if any(u[:2] == m for u in value["units"])]
    return max(present, key=lambda m: _mean_of(value, m)) if present else None


def comparisons(values, models, baseline=BASELINE, score=None):
    """[(family, model, reference, (metric, set, score))] for the table and the summary."""
    out = []
    for key in values:
        family = f"table/{key[0]}"
        out += [(family, m, baseline, key) for m in models if m != baseline]
    acc = ("accuracy", "id_test", "")
    if acc in values:
        best = _best(values[acc], models)
        out += [("summary/accuracy_best", m, best, acc) for m in models if m != best]
        if baseline in models:
            out += [("summary/accuracy_augment", (a, baseline[1]), baseline, acc)
                    for a in dict.fromkeys(a for a, _ in models) if (a, baseline[1]) in models and a != baseline[0]]
    for key in [k for k in values if k[0] == "auroc" and k[2] == score]:
        best = _best(values[key], models)
        out += [("summary/auroc_best", m, best, key) for m in models if m != best]
        out += [("summary/auroc_oe", (a, o), (a, baseline[1]), key) for a, o in models
                if o != baseline[1] and (a, baseline[1]) in models]
    return out


def _difference(value, model, reference):
    """stats.difference_from_replicates over the seeds both models have, with the files it came
    from (source: ';'-joined); None without a seed in common."""
    columns = {u: i for i, u in enumerate(value["units"])}
    seeds = sorted({s for a, o, s in value["units"] if (a, o) == model}
                   & {s for a, o, s in value["units"] if (a, o) == reference})
    if not seeds:
        return None
    units = [(*model, s) for s in seeds] + [(*reference, s) for s in seeds]
    im, ir = [columns[u] for u in units[:len(seeds)]], [columns[u] for u in units[len(seeds):]]
    result = stats.difference_from_replicates(value["observed"][im], value["observed"][ir],
                                              value["replicates"][:, im], value["replicates"][:, ir])
    return {**result, "source": ";".join([f for u in units for f in value["files"][u]] + value["also"])}


def detectable(rows):
    """detectable.csv from the table's comparisons with Base (rows of differences.csv)."""
    table = rows[rows["family"].str.startswith("table/")]
    out = []
    for (metric, set_name), group in table.groupby(["metric", "set"], sort=False):
        n_seeds = Counter(group["n_seeds"]).most_common(1)[0][0]
        # se_seeds^2 = s^2 / S: pool the per-seed variances s^2, then scale to S seeds
        seed_sd = float(np.sqrt(np.mean(group["se_seeds"] ** 2 * group["n_seeds"]))) if n_seeds > 1 else np.nan
        example_se = float(np.sqrt(np.mean(group["se_examples"] ** 2)))
        out.append(dict(metric=metric, set=set_name, n_seeds=int(n_seeds), n_comparisons=len(group),
                        seed_sd=seed_sd, example_se=example_se,
                        mdd=float(stats.detectable_difference(seed_sd, example_se, n_seeds, ALPHA, POWER)),
                        floor=stats.detectable_floor(example_se, ALPHA, POWER), alpha=ALPHA, power=POWER))
    return pd.DataFrame(out, columns=DETECTABLE_COLUMNS)


def compare_study(tables, logits_root, scores_root, score=None, baseline=BASELINE, n_boot=stats.N_BOOT, seed=0):
    """{"differences": DataFrame, "detectable": DataFrame} of the study in `tables`.

    score: the summary's headline score (default headline_score of the detection table's)."""
    models = _models(tables)
    empty = {"differences": pd.DataFrame(columns=DIFFERENCE_COLUMNS),
             "detectable": pd.DataFrame(columns=DETECTABLE_COLUMNS)}
    if baseline not in models:
        log.warning("no %s/%s model in the tables: no differences to report", *baseline)
        return empty
    if score is None and "detection" in tables:
        score = headline_score(dict.fromkeys(tables["detection"][0]["score"]))
    values = headline_values(tables, logits_root, scores_root, models, n_boot, seed)
    rows = []
    for family, model, reference, key in comparisons(values, models, baseline, score):
        result = _difference(values[key], model, reference)
        if result is None:
            continue
        rows.append(dict(family=family, augment=model[0], oe=model[1], ref_augment=reference[0], ref_oe=reference[1],
                         metric=key[0], set=key[1], score=key[2], **result, n_examples=values[key]["n_examples"]))
    if not rows:
        return empty
    df = pd.DataFrame(rows)
    half = stats.half_width(df["se_seeds"], df["se_examples"], df["n_seeds"], stats.LEVEL)
    df["low"], df["high"] = df["diff"] - half, df["diff"] + half
    df["p"] = stats.p_value(df["diff"], df["se_seeds"], df["se_examples"], df["n_seeds"])
    df["p_holm"] = df.groupby("family")["p"].transform(lambda p: stats.holm(p.to_numpy()))
    df["family_size"] = df.groupby("family")["p"].transform("size")
    found = detectable(df)
    mdd = {(r.metric, r.set): r.mdd for r in found.itertuples()}
    df["mdd"] = [mdd.get((m, s), np.nan) for m, s in zip(df["metric"], df["set"])]
    seen = (df["p_holm"] < ALPHA) & ~(df["diff"].abs() < df["mdd"])  # NaN mdd (one seed) decides nothing here
    df["verdict"] = np.where(df["n_seeds"] < 2, UNTESTED, np.where(seen, BEYOND, WITHIN))
    df["n_boot"] = n_boot
    df["method"] = [stats.method_text(s, n, n_boot) for s, n in zip(df["n_seeds"], df["n_examples"])]
    return {"differences": df[DIFFERENCE_COLUMNS], "detectable": found}


def main(argv=None):
    p = argparse.ArgumentParser(description="Differences between models with two-level bootstrap intervals.")
    p.add_argument("--tables", required=True, help="folder with accuracy.csv, detection.csv, calibration.csv")
    p.add_argument("--logits", help="the folder of every model's logits (id_test.npz, mnistc_*.npz); default: the "
                   "logits folder beside --tables, as lib.layout places it")
    p.add_argument("--scores", help="the folder of every model's per-example scores (<set>/<score>.npz); default: "
                   "the scores folder beside --tables")
    p.add_argument("--headline-score", help="the summary's score (default: msp, else the first)")
    p.add_argument("--out", required=True, help="differences.csv")
    p.add_argument("--detectable-out", required=True, help="detectable.csv")
    p.add_argument("--n-boot", type=int, default=stats.N_BOOT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log")
    a = p.parse_args(argv)
    setup_logging(a.log)
    # Beside --tables and relative when it is, so the `source` column names files as the rules do.
    tables = os.path.normpath(a.tables)
    if os.path.basename(tables) in (os.curdir, os.pardir):  # "." or "..": the folder needs its name
        tables = os.path.abspath(tables)
    results = os.path.dirname(tables)
    out = compare_study(read_tables(a.tables), a.logits or layout.logits_root(results),
                        a.scores or layout.scores_root(results), a.headline_score, n_boot=a.n_boot, seed=a.seed)
    write_csv_atomic(out["differences"], a.out)
    write_csv_atomic(out["detectable"], a.detectable_out)
    log.info("%d differences -> %s; %d detectable-difference rows -> %s", len(out["differences"]), a.out,
             len(out["detectable"]), a.detectable_out)


if __name__ == "__main__":
    main()
