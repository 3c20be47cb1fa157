"""What the SLURM tests of every tier share: the workflow's rules and local rules, the
profiles, tests/slurm/derive_profile.py (the test cluster's profile), and the workflow's
SLURM scripts workflow/slurm_plan.py and workflow/slurm_status.py.

    from tests.helpers.slurm import GPU_RULES, derive_profile, local_rules, study_grid
    profile = derive_profile.read_profile(REAL_PROFILE)
    assert set(GPU_RULES) <= workflow_rules()
"""
import importlib.util
import re
from pathlib import Path

import yaml

from tests.helpers import ROOT

REPO = Path(ROOT)
SNAKEFILE = REPO / "Snakefile"
WORKFLOW_FILES = [SNAKEFILE, *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
TINY = REPO / "presets" / "tiny.yaml"
SLURM_DIR = REPO / "tests" / "slurm"
RESUME_OVERLAY = SLURM_DIR / "resume.yaml"
REAL_PROFILE = REPO / "profiles" / "slurm"
CPU_PROFILE = REPO / "profiles" / "slurm-cpu"
GPU_RULES = ("train", "evaluate")
# Rules that must run where Snakemake runs: downloads (the login node has the
# network), and the cheap CPU steps (a SLURM job each would wait in the queue
# longer than it runs). (`all` has no action: Snakemake never submits it.)
MUST_BE_LOCAL = {"report", "score", "model_metrics", "prepare_dataset"}
MUST_BE_LOCAL_PREFIXES = ("fetch", "aggregate")


def load_script(path: Path):
    """The Python file at path as a module (scripts of tests/slurm/ and workflow/ are no packages)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


derive_profile = load_script(SLURM_DIR / "derive_profile.py")
slurm_plan = load_script(REPO / "workflow" / "slurm_plan.py")
slurm_status = load_script(REPO / "workflow" / "slurm_status.py")


def workflow_rules() -> set:
    """The name of every rule in the Snakefile and workflow/rules/*.smk."""
    names = set()
    for path in WORKFLOW_FILES:
        names |= set(re.findall(r"^\s*rule (\w+):", path.read_text(), re.MULTILINE))
    return names


def local_rules() -> set:
    """Every rule named in a `localrules:` statement of the workflow files."""
    return slurm_plan.local_rules(WORKFLOW_FILES)


def must_be_local(rule: str) -> bool:
    return rule in MUST_BE_LOCAL or rule.startswith(MUST_BE_LOCAL_PREFIXES)


def study_grid(*config_files: Path) -> list:
    """(augment, oe, seed) of every model the config files ask for (later files win)."""
    settings = {}
    for path in config_files:
        settings.update(yaml.safe_load(path.read_text()))
    return [(a, o, s) for a in settings["augment"] for o in settings["oe"] for s in settings["seeds"]]
