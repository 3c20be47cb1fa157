# Helpers shared by every stage: the grid, paths, the per-rule config subsets and the
# command prefix that runs lib/ with this workflow's Python.

import json
import shlex

import lib.data.registry as lib_datasets
import lib.evaluate.aggregate as lib_aggregate
import lib.evaluate.detection as lib_detect
from lib.data.mnist_c import CORRUPTIONS  # the 15 MNIST-C corruptions (numpy-only import, fast to parse)

ROOT = workflow.basedir
# Jobs run `python -m lib.<module>` with the interpreter that runs Snakemake (the
# project's environment) and lib/ on the path, from any working directory.
PY = f"PYTHONPATH={shlex.quote(ROOT)} {shlex.quote(sys.executable)}"

ID = config["in_distribution"]
AUGMENTS = config["augment"]
OES = config["oe"]
SEEDS = config["seeds"]
OOD_SETS = config["ood_sets"]
SCORES = config["scores"]
OE_SOURCE = config["outlier_exposure"]["source"]

MODEL_DIR = "results/models/{augment}/{oe}/seed{seed}"
LOGIT_DIR = "results/logits/{augment}/{oe}/seed{seed}"


wildcard_constraints:
    augment="|".join(AUGMENTS),
    oe="|".join(OES),
    seed=r"\d+",
    dataset=r"[a-z0-9_]+",
    ood_set="|".join(OOD_SETS),
    score="|".join(SCORES),


def models():
    """Every (augment, oe, seed) of the grid as wildcard dicts."""
    return [dict(augment=a, oe=o, seed=s) for a in AUGMENTS for o in OES for s in SEEDS]


def expand_models(pattern):
    return [pattern.format(**m) for m in models()]


def data_file(name):
    return f"results/data/{name}.npz"


def corruption_file(corruption):
    return f"results/data/corruptions/{corruption}.npz"


def train_cfg_json(wildcards):
    """Only the settings that shape this model, so unrelated edits do not retrain it."""
    sub = {"seed": config["seed"], "train": config["train"], "outlier_exposure": config["outlier_exposure"]}
    if wildcards.augment == "saltpepper":
        sub["saltpepper"] = config["saltpepper"]
    if wildcards.augment == "pixmix":
        # The mixing set reaches the job as a file (an input), and its marks as seen in
        # training touch only the report: its config does not retrain a model.
        sub["pixmix"] = {k: v for k, v in config["pixmix"].items() if k != "mixing"}
    return json.dumps(sub, sort_keys=True)


def eval_cfg_json():
    return json.dumps({"seed": config["seed"], "train": config["train"]}, sort_keys=True)
