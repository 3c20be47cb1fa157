"""The results layout: where every file of a run lives, defined once for rules and lib alike.

Each function takes plain values and returns a path under the results folder (`results=`,
"results" by default, relative to the run's working directory). A model's wildcards that
are left out stay as Snakemake wildcards ({augment}, {oe}, {seed}), which gives the rule's pattern:

    from lib import layout
    layout.model_file("pixmix", "oe", 1)            # 'results/models/pixmix/oe/seed1/model.pt'
    layout.model_file()                             # 'results/models/{augment}/{oe}/seed{seed}/model.pt'
    layout.logits_file("id_test", "none", "baseline", 1)  # 'results/logits/none/baseline/seed1/id_test.npz'
    layout.logits_file(layout.mnistc_set("fog"))    # 'results/logits/{augment}/{oe}/seed{seed}/mnistc_fog.npz'
    layout.score_file("gaussian", "msp")            # 'results/scores/{augment}/{oe}/seed{seed}/gaussian/msp.json'
    layout.example_scores_file("gaussian", "msp")   # the same with .npz: its per-example scores
    layout.metrics_file("accuracy")                 # 'results/metrics/{augment}/{oe}/seed{seed}/accuracy.json'
    layout.table_file("detection.csv")              # 'results/tables/detection.csv'
    layout.data_file("digits"), layout.corruption_file("fog"), layout.mixing_file()
    layout.shifted_file()                           # 'results/data/id_shifted.npz' (full-spectrum detection)
    layout.log_file("train/{augment}/{oe}/seed{seed}")  # 'results/logs/train/{augment}/{oe}/seed{seed}.log'

Every per-model folder is <kind>/<augment>/<oe>/seed<seed> (`model_part`); code handed one
such kind's folder (the report's --models, differences' --logits) joins `model_part` to it,
and a model's logits folder holds <set>.npz per evaluation set, `mnistc_<corruption>.npz`
per MNIST-C corruption, `id_shifted.npz` (SHIFTED_SET, full-spectrum detection), the
Mahalanobis statistics (MAHALANOBIS_STATS), those of knn, vim and react (POSTHOC_STATS) and
the score hyperparameters (HYPERPARAMETERS).
"""
import os
import posixpath

RESULTS = "results"
MNISTC_PREFIX = "mnistc_"  # logits sets of the MNIST-C corruptions: mnistc_<corruption>
SHIFTED_SET = "id_shifted"  # the covariate-shifted ID test set of full-spectrum detection (lib.data.shifted)
MAHALANOBIS_STATS = "mahalanobis_stats.npz"  # the training-feature statistics, beside a model's logits
POSTHOC_STATS = "posthoc_stats.npz"  # what knn, vim and react read: the head, training features, fits
HYPERPARAMETERS = "score_hyperparameters.json"  # the score hyperparameters used and their source
MODEL_FILE = "model.pt"
TRAIN_LOG = "train_log.csv"

# Checkpoints trained elsewhere (config external_models) live at external/<name>/seed0.
EXTERNAL_AUGMENT = "external"  # their augment key
EXTERNAL_SEED = 0              # their one "seed": the checkpoint itself

# A model's wildcards; by default they stay as {wildcard} patterns, as the rules need them.
AUGMENT, OE, SEED = "{augment}", "{oe}", "{seed}"


def _under(results, path):
    # posixpath: "/" in rule patterns on every system, and a results folder of "" stays relative
    return posixpath.join(results, path)


def model_part(augment=AUGMENT, oe=OE, seed=SEED):
    """<augment>/<oe>/seed<seed>: one model's place under each per-model folder."""
    return f"{augment}/{oe}/seed{seed}"


def data_dir(results=RESULTS):
    return _under(results, "data")


def data_file(name, results=RESULTS):
    """A prepared data set: uint8 images and int64 labels (lib.data.registry)."""
    return f"{data_dir(results)}/{name}.npz"


def fetched_record(name, results=RESULTS):
    """The record of a real set's (or MNIST-C's) fetched raw files."""
    return f"{data_dir(results)}/fetched/{name}.json"


def corruption_dir(results=RESULTS):
    return f"{data_dir(results)}/corruptions"


def corruption_file(corruption, results=RESULTS):
    """One MNIST-C corruption of the in-distribution test set."""
    return f"{corruption_dir(results)}/{corruption}.npz"


def shifted_file(results=RESULTS):
    """The covariate-shifted ID test set: each test image once, under one MNIST-C corruption."""
    return data_file(SHIFTED_SET, results)


def mixing_file(results=RESULTS):
    """PixMix's mixing set (lib.data.mixing)."""
    return f"{data_dir(results)}/mixing.npz"


def models_dir(results=RESULTS):
    return _under(results, "models")


def model_dir(augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    return f"{models_dir(results)}/{model_part(augment, oe, seed)}"


def model_file(augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    return f"{model_dir(augment, oe, seed, results)}/{MODEL_FILE}"


def train_log_file(augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    return f"{model_dir(augment, oe, seed, results)}/{TRAIN_LOG}"


def checkpoint_file(augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    """The training job's checkpoint (written each epoch, removed once the model is written)."""
    return _under(results, f"checkpoints/{model_part(augment, oe, seed)}.pt")


def logits_root(results=RESULTS):
    return _under(results, "logits")


def logits_dir(augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    return f"{logits_root(results)}/{model_part(augment, oe, seed)}"


def logits_file(set_name, augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    """One model's cached logits (and labels, features) on one evaluation set."""
    return f"{logits_dir(augment, oe, seed, results)}/{set_name}.npz"


def mnistc_set(corruption):
    """The evaluation-set name of an MNIST-C corruption: mnistc_<corruption>."""
    return MNISTC_PREFIX + corruption


def corruption_of(set_name):
    """The corruption of an MNIST-C evaluation set's name, or None for any other set."""
    return set_name[len(MNISTC_PREFIX):] if set_name.startswith(MNISTC_PREFIX) else None


def mahalanobis_stats_file(augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    return f"{logits_dir(augment, oe, seed, results)}/{MAHALANOBIS_STATS}"


def posthoc_stats_file(augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    """knn's, vim's and react's training-set statistics (lib.evaluate.scores.fit_posthoc)."""
    return f"{logits_dir(augment, oe, seed, results)}/{POSTHOC_STATS}"


def hyperparameters_file(augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    """The score hyperparameters of one model and where they came from (lib.evaluate.tuning)."""
    return f"{logits_dir(augment, oe, seed, results)}/{HYPERPARAMETERS}"


def score_file(ood_set="{ood_set}", score="{score}", augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    """One OOD-detection record: one score on one OOD set of one model."""
    return _under(results, f"scores/{model_part(augment, oe, seed)}/{ood_set}/{score}.json")


def scores_root(results=RESULTS):
    return _under(results, "scores")


def example_scores_file(ood_set="{ood_set}", score="{score}", augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    """The per-example scores (id_scores, ood_scores) beside score_file's record."""
    return f"{scores_root(results)}/{model_part(augment, oe, seed)}/{ood_set}/{score}.npz"


def metrics_file(kind, augment=AUGMENT, oe=OE, seed=SEED, results=RESULTS):
    """One model's record of `kind`: accuracy, robustness or calibration."""
    return _under(results, f"metrics/{model_part(augment, oe, seed)}/{kind}.json")


def tables_dir(results=RESULTS):
    return _under(results, "tables")


def table_file(name, results=RESULTS):
    """A study-wide table (accuracy.csv, detection.csv, leaks.json, ...)."""
    return f"{tables_dir(results)}/{name}"


def log_file(name, results=RESULTS):
    """A job's log: log_file("train/{augment}/{oe}/seed{seed}") -> results/logs/train/.../seed{seed}.log."""
    return _under(results, f"logs/{name}.log")


def benchmarks_dir(results=RESULTS):
    return _under(results, "benchmarks")


def benchmark_file(name, results=RESULTS):
    """A job's Snakemake benchmark; the report reads them per rule, <benchmarks>/<rule>/**.tsv."""
    return f"{benchmarks_dir(results)}/{name}.tsv"


def report_file(results=RESULTS):
    return _under(results, "report.html")


def npz_in(folder, name):
    """<folder>/<name>.npz: a set's file in a folder of sets (data, corruptions, one model's logits)."""
    return os.path.join(folder, f"{name}.npz")
