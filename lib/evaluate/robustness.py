"""Robustness metrics on MNIST-C from accuracies per corruption (pure functions).

Accuracies are fractions in [0, 1]; a model is named "<augment>/<oe>" as in the
results tree (e.g. "pixmix/oe"); the reference model for mCE is "none/baseline".

    from lib.evaluate.robustness import mean_accuracy, mce, non_overlap_mean, robustness_rows
    acc = {"shot_noise": 0.97, "rotate": 0.91, ...}          # one model, one seed
    mean_accuracy(acc)                                        # mean over the corruptions given
    non_overlap_mean(acc, "pixmix")                           # leaves out rotate, shear, translate, brightness
    mce(corruption_errors(acc), corruption_errors(acc_base))  # 1.0 = as good as the baseline

    rows = robustness_rows(table)            # table: model, seed, corruption, accuracy (long)
    summary = robustness_summary(rows)       # mean and std over seeds per model
    cells = per_corruption_table(table)      # model x corruption, mean and std over seeds

mCE follows the PixMix paper's normalised form: for each corruption the model's error
is divided by the baseline model's error on that corruption, and the ratios are
averaged (multiply by 100 for the paper's percentages). A ratio is undefined where
the baseline makes no error: such corruptions are left out of the mean (for every
model alike, so the baseline's own mCE stays exactly 1), and mCE is NaN when no
corruption is left.
"""
import numpy as np
import pandas as pd

from lib.layout import EXTERNAL_AUGMENT

# Corruptions that a training augmentation already shows the model. PixMix's
# augmentation ops include rotate, shear, translate and brightness; salt-and-pepper
# training noise is MNIST-C's impulse_noise.
OVERLAP = {
    "pixmix": frozenset({"rotate", "shear", "translate", "brightness"}),
    "saltpepper": frozenset({"impulse_noise"}),
    "none": frozenset(),
    # External checkpoints (config external_models): their training is not this project's to
    # know, so nothing is left out; docs/published.md asks to read their column that way.
    EXTERNAL_AUGMENT: frozenset(),
}

BASELINE_MODEL = "none/baseline"


def _check_accuracies(acc_by_corruption):
    if not acc_by_corruption:
        raise ValueError("no accuracies given: need at least one corruption")
    for name, acc in acc_by_corruption.items():
        if not 0.0 <= float(acc) <= 1.0:
            raise ValueError(f"accuracy for {name!r} is {acc!r}; accuracies are fractions in [0, 1]")


def corruption_errors(acc_by_corruption):
    """Error (1 - accuracy) per corruption."""
    _check_accuracies(acc_by_corruption)
    return {name: 1.0 - float(acc) for name, acc in acc_by_corruption.items()}


def mean_accuracy(acc_by_corruption):
    """Mean accuracy over the corruptions given."""
    _check_accuracies(acc_by_corruption)
    return float(np.mean([float(acc) for acc in acc_by_corruption.values()]))


def overlapping_corruptions(augment):
    """The corruptions a model trained with `augment` has seen a form of in training."""
    if augment not in OVERLAP:
        raise ValueError(f"unknown augmentation {augment!r}; known: {', '.join(sorted(OVERLAP))}")
    return OVERLAP[augment]


def non_overlap_mean(acc_by_corruption, augment):
    """Mean accuracy over the corruptions that do not overlap the model's augmentation."""
    unseen = {name: acc for name, acc in acc_by_corruption.items()
              if name not in overlapping_corruptions(augment)}
    if not unseen:
        raise ValueError(f"every corruption given overlaps augmentation {augment!r}; "
                         "nothing is left to average")
    return mean_accuracy(unseen)


def mce(errors_model, errors_baseline):
    """Mean over corruptions of (model error / baseline error); 1.0 = the baseline.

    Both mappings must cover the same corruptions. Corruptions with baseline error 0
    are left out (see the module docstring); NaN when none is left.
    """
    if set(errors_model) != set(errors_baseline):
        missing = sorted(set(errors_model) ^ set(errors_baseline))
        raise ValueError(f"model and baseline errors cover different corruptions: {', '.join(missing)}")
    ratios = [errors_model[name] / errors_baseline[name]
              for name in errors_model if errors_baseline[name] > 0.0]
    return float(np.mean(ratios)) if ratios else float("nan")


def augment_of(model):
    """'pixmix/oe' -> 'pixmix'."""
    return str(model).split("/", 1)[0]


def _check_table(table):
    needed = {"model", "seed", "corruption", "accuracy"}
    missing = needed - set(table.columns)
    if missing:
        raise ValueError(f"robustness table lacks column(s) {', '.join(sorted(missing))}; "
                         f"it needs {', '.join(sorted(needed))}")
    repeated = table.duplicated(["model", "seed", "corruption"])
    if repeated.any():
        first = table.loc[repeated, ["model", "seed", "corruption"]].iloc[0].tolist()
        raise ValueError(f"robustness table has more than one accuracy for (model, seed, corruption) = {first}")


def robustness_rows(table, baseline_model=BASELINE_MODEL):
    """One row per (model, seed) from a long table of accuracies.

    `table` has columns model, seed, corruption, accuracy. Returns a DataFrame with
    model, augment, seed, n_corruptions, mean_accuracy, non_overlap_mean,
    left_out (the overlapping corruptions, comma-separated) and mce, the last
    relative to `baseline_model` of the same seed (NaN where that seed has none).
    """
    _check_table(table)
    accuracies = {key: dict(zip(group["corruption"], group["accuracy"].astype(float)))
                  for key, group in table.groupby(["model", "seed"], sort=True)}
    rows = []
    for (model, seed), acc in accuracies.items():
        augment = augment_of(model)
        baseline_acc = accuracies.get((baseline_model, seed))
        rows.append({
            "model": model,
            "augment": augment,
            "seed": seed,
            "n_corruptions": len(acc),
            "mean_accuracy": mean_accuracy(acc),
            "non_overlap_mean": non_overlap_mean(acc, augment),
            "left_out": ",".join(sorted(overlapping_corruptions(augment) & set(acc))),
            "mce": (mce(corruption_errors(acc), corruption_errors(baseline_acc))
                    if baseline_acc is not None else float("nan")),
        })
    return pd.DataFrame(rows)


def robustness_summary(rows):
    """Mean and std over seeds of the metrics in robustness_rows' output, one row per model.

    Columns <metric>_mean and <metric>_std (std with ddof 1; NaN for a single seed),
    plus n_seeds and left_out.
    """
    metrics = ["mean_accuracy", "non_overlap_mean", "mce"]
    grouped = rows.groupby("model", sort=True)
    summary = grouped[metrics].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary.insert(0, "n_seeds", grouped["seed"].nunique())
    summary["left_out"] = grouped["left_out"].first()
    return summary.reset_index()


def per_corruption_table(table):
    """Long table model, corruption, mean, std, n_seeds, overlaps (bool) over seeds.

    `overlaps` marks a corruption that the model's training augmentation overlaps.
    Pivot with .pivot(index="model", columns="corruption", values="mean") for a grid.
    """
    _check_table(table)
    cells = (table.groupby(["model", "corruption"], sort=True)["accuracy"]
             .agg(mean="mean", std="std", n_seeds="count").reset_index())
    cells["overlaps"] = [corruption in overlapping_corruptions(augment_of(model))
                         for model, corruption in zip(cells["model"], cells["corruption"])]
    return cells
