# Helpers shared by every stage: the grid, the per-rule config subsets and the command
# prefix that runs lib/ with this workflow's Python. Every path comes from lib/layout.py.

import importlib
import json
import shlex

import lib.config as lib_config
from lib import layout
from lib.data.mnist_c import CORRUPTIONS  # the 15 MNIST-C corruptions (numpy-only import, fast to parse)
from lib.data.registry import ood_groups
from lib.layout import EXTERNAL_AUGMENT, EXTERNAL_SEED


class ImportedOnFirstUse:
    """A module's stand-in, imported on the first attribute asked of it. The `run:` rules'
    job functions pull in pandas, scipy and scikit-learn, seconds of imports that a plan
    (`snakemake -n`) or a SLURM submission never needs. Safe when several `run:` jobs start
    at once in Snakemake's threads: importlib's per-module lock makes the others wait for
    the one import (importlib.util.LazyLoader is not thread-safe before Python 3.12)."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


def lazy_module(name):
    """lib_x = lazy_module("lib.evaluate.x"): the module, imported when a job first uses it."""
    return ImportedOnFirstUse(name)


ROOT = workflow.basedir
# Jobs run `python -m lib.<module>` with the interpreter that runs Snakemake (the
# project's environment) and lib/ on the path, from any working directory.
PY = f"PYTHONPATH={shlex.quote(ROOT)} {shlex.quote(sys.executable)}"

ID = config["in_distribution"]
AUGMENTS = config["augment"]
OES = config["oe"]
SEEDS = config["seeds"]
OOD_SETS = config["ood_sets"]
VALIDATION_OOD_SETS = config["validation_ood_sets"]  # score hyperparameters are tuned on these (never on OOD_SETS)
SCORES = config["scores"]
OOD_GROUPS = ood_groups(config)  # {OOD set: near or far}, the registry's groups with the config's overrides
OE_SOURCE = config["outlier_exposure"]["source"]
# The config's extension files (docs/extensions.md), loaded by the Snakefile's config check.
# Jobs that run `python -m lib...` load them too (EXTENSION_ARGS); a job declares as inputs
# the files that registered the names it uses (extension_files), so an edited file reruns
# exactly the jobs that use what it registers, and what is computed from them.
EXTENSIONS = config["extensions"]
EXTENSION_ARGS = " ".join(f"--extension {shlex.quote(path)}" for path in EXTENSIONS)


def extension_files(key, *names):
    """The extension files that registered these names of config key `key` ([] for built-ins)."""
    return [path for name in names for path in lib_config.extension_files(key, name)]


# Checkpoints trained elsewhere enter the grid as augment "external", oe = their name, one seed.
EXTERNALS = config["external_models"]

# Before any job (and only in the main process, not again inside each job): every external
# checkpoint is there (downloaded unless offline), has its pinned sha256 and loads strictly.
if EXTERNALS and workflow.is_main_process:
    from lib.train.external import ExternalModelError, check_external_models  # torch: only when needed

    try:
        check_external_models(config)
    except ExternalModelError as error:
        raise WorkflowError(str(error)) from None


wildcard_constraints:
    augment="|".join(AUGMENTS + ([EXTERNAL_AUGMENT] if EXTERNALS else [])),
    oe="|".join(OES + list(EXTERNALS)),
    seed=r"\d+",
    dataset=r"[a-z0-9_]+",
    ood_set="|".join(OOD_SETS),
    score="|".join(SCORES),


def trained_models():
    """Every (augment, oe, seed) trained here, as wildcard dicts."""
    return [dict(augment=a, oe=o, seed=s) for a in AUGMENTS for o in OES for s in SEEDS]


def models():
    """Every model evaluated: the trained grid, then the external models (augment "external")."""
    return trained_models() + [dict(augment=EXTERNAL_AUGMENT, oe=name, seed=EXTERNAL_SEED) for name in EXTERNALS]


def expand_models(pattern):
    """A per-model path pattern (lib.layout with the model's wildcards left out) for every model."""
    return [pattern.format(**m) for m in models()]


def model_values(wildcards):
    """A model's wildcards as the plain values the lib jobs take: augment, oe, seed (int)."""
    return dict(augment=wildcards.augment, oe=wildcards.oe, seed=int(wildcards.seed))


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
