"""What the SLURM tests of every tier share: the workflow's rules and local rules, the
profiles, and tests/slurm/derive_profile.py (the test cluster's profile).

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
GPU_RULES = ("train", "evaluate")
# Rules that must run where Snakemake runs: downloads (the login node has the
# network), and the cheap CPU steps (a SLURM job each would wait in the queue
# longer than it runs). (`all` has no action: Snakemake never submits it.)
MUST_BE_LOCAL = {"report", "score", "model_metrics", "prepare_dataset"}
MUST_BE_LOCAL_PREFIXES = ("fetch", "aggregate")


def _load_derive_profile():
    spec = importlib.util.spec_from_file_location("derive_profile", SLURM_DIR / "derive_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


derive_profile = _load_derive_profile()


def workflow_rules() -> set:
    """The name of every rule in the Snakefile and workflow/rules/*.smk."""
    names = set()
    for path in WORKFLOW_FILES:
        names |= set(re.findall(r"^\s*rule (\w+):", path.read_text(), re.MULTILINE))
    return names


def local_rules() -> set:
    """Every rule named in a `localrules:` statement of the workflow files."""
    names = set()
    for path in WORKFLOW_FILES:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            match = re.match(r"(\s*)localrules:(.*)$", line)
            if not match:
                continue
            indent, text = len(match.group(1)), [match.group(2)]
            for following in lines[number + 1:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                text.append(following.split("#")[0])
            names |= {name.strip() for name in ",".join(text).split(",") if name.strip()}
    return names


def must_be_local(rule: str) -> bool:
    return rule in MUST_BE_LOCAL or rule.startswith(MUST_BE_LOCAL_PREFIXES)


def study_grid(*config_files: Path) -> list:
    """(augment, oe, seed) of every model the config files ask for (later files win)."""
    settings = {}
    for path in config_files:
        settings.update(yaml.safe_load(path.read_text()))
    return [(a, o, s) for a in settings["augment"] for o in settings["oe"] for s in settings["seeds"]]
