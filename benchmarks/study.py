"""A synthetic study on disk, shaped like the workflow's results/, for the differences step.

    from benchmarks.study import write_study
    write_study("/tmp/study", seeds=[1, 2, 3])      # the default study's size: 27 models
    # -> /tmp/study/results/tables/{accuracy,detection,calibration}.csv,
    #    results/logits/<augment>/<oe>/seed<s>/{id_test,mnistc_<c>}.npz,
    #    results/scores/<augment>/<oe>/seed<s>/<set>/<score>.npz

What lib.evaluate.differences reads, no more: logits and labels of the ID test set and of
every MNIST-C corruption, the per-example scores of every (OOD set, score), and the tables
with the same numbers computed from them (lib.evaluate.metrics), temperatures included.
The logits carry a class signal whose strength depends on the model and, a little, on the
seed, so models differ by known amounts; the numbers mean nothing else.
"""
import os

import numpy as np
import pandas as pd

from lib.common import derive_seed, save_npz_atomic
from lib import layout
from lib.evaluate.calibration import confidence_and_correct
from lib.evaluate.metrics import auroc_pair_count, ece

AUGMENTS = ("none", "saltpepper", "pixmix")
OES = ("baseline", "oe", "oe_tune")
OOD_SETS = ("fashion_mnist", "kmnist", "notmnist", "omniglot", "cifar10_gray", "gaussian", "bernoulli", "blobs",
            "negated", "uniform")
SCORES = ("msp", "xent", "energy", "maxlogit", "odin", "mahalanobis")
CORRUPTIONS = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
               "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges")


def _logits(rng, labels, strength, n_classes=10):
    z = rng.normal(0.0, 1.0, (len(labels), n_classes)).astype(np.float32)
    z[np.arange(len(labels)), labels] += strength
    return z


def _row(augment, oe, seed, metric, set_name, score, value, source):
    return dict(augment=augment, oe=oe, seed=seed, metric=metric, set=set_name, score=score, value=float(value),
                source=source)


def write_study(folder, augments=AUGMENTS, oes=OES, seeds=(1, 2, 3), ood_sets=OOD_SETS, scores=SCORES,
                corruptions=CORRUPTIONS, n_test=10_000, n_ood=10_000, n_corrupted=10_000, gap=0.2):
    """Write the study under folder/results; returns the results folder. `gap`: how much each
    augmentation step strengthens the class signal (OE half as much)."""
    results = os.path.join(folder, layout.RESULTS)
    rows = {"accuracy": [], "detection": [], "calibration": []}
    labels = np.random.default_rng(0).integers(0, 10, n_test)
    for a_index, augment in enumerate(augments):
        for o_index, oe in enumerate(oes):
            for seed in seeds:
                rng = np.random.default_rng(derive_seed(0, "study", augment, oe, seed))
                strength = 3.0 + gap * (a_index + o_index / 2) + rng.normal(0, 0.05)
                logit_dir = layout.logits_dir(augment, oe, seed, results)
                id_logits = _logits(rng, labels, strength)
                save_npz_atomic(layout.logits_file("id_test", augment, oe, seed, results), logits=id_logits, labels=labels)
                temperature = 1.0 + 0.1 * a_index
                for set_name, logits, set_labels in [("id_test", id_logits, labels)] + [
                        (layout.mnistc_set(c), _logits(rng, labels[:n_corrupted], strength - 1.0 - 0.1 * i),
                         labels[:n_corrupted]) for i, c in enumerate(corruptions)]:
                    if set_name != "id_test":
                        save_npz_atomic(layout.logits_file(set_name, augment, oe, seed, results), logits=logits, labels=set_labels)
                    for variant, t in (("uncalibrated", 1.0), ("temperature_scaled", temperature)):
                        confidence, correct = confidence_and_correct(logits, set_labels, t)
                        rows["calibration"] += [
                            _row(augment, oe, seed, "accuracy", set_name, variant, correct.mean(), logit_dir),
                            _row(augment, oe, seed, "ece", set_name, variant, ece(confidence, correct), logit_dir)]
                rows["accuracy"].append(_row(augment, oe, seed, "accuracy", "id_test", "", (id_logits.argmax(1) == labels).mean(),
                                             logit_dir))
                rows["calibration"].append(_row(augment, oe, seed, "temperature", "id_val", "temperature_scaled",
                                                temperature, logit_dir))
                for score in scores:
                    id_scores = rng.normal(0.0, 1.0, n_test)  # one model's ID scores: the same for every OOD set
                    for s_index, ood_set in enumerate(ood_sets):
                        ood_scores = rng.normal(0.5 + 0.1 * s_index + gap / 4 * (a_index + o_index), 1.0, n_ood)
                        path = layout.example_scores_file(ood_set, score, augment, oe, seed, results)
                        save_npz_atomic(path, id_scores=id_scores, ood_scores=ood_scores)
                        rows["detection"].append(_row(augment, oe, seed, "auroc", ood_set, score,
                                                      auroc_pair_count(id_scores, ood_scores), path))
    for augment, oe, seed in {(r["augment"], r["oe"], r["seed"]) for r in rows["accuracy"]}:
        for variant in ("uncalibrated", "temperature_scaled"):
            for metric in ("accuracy", "ece"):
                values = [r["value"] for r in rows["calibration"] if (r["augment"], r["oe"], r["seed"], r["metric"],
                          r["score"]) == (augment, oe, seed, metric, variant) and layout.corruption_of(r["set"])]
                rows["calibration"].append(_row(augment, oe, seed, metric, "mnist_c", variant, np.mean(values), ""))
    os.makedirs(layout.tables_dir(results), exist_ok=True)
    for name, table in rows.items():
        pd.DataFrame(table).to_csv(layout.table_file(f"{name}.csv", results), index=False)
    return results
