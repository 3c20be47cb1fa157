"""Run the real workflow from tests, write the configs they run, and read Snakemake's plan.

    from tests.helpers.workflow_runs import job_counts, resolved_config, run_snakemake, study_config
    config = study_config(tmp_path / "study.yaml", oe=["baseline"])   # presets/tiny.yaml, changed
    assert resolved_config("config.yaml", config)["oe"] == ["baseline"]
    result = run_snakemake(tmp_path / "run", config, "-n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert job_counts(result.stdout)["train"] == 2
"""
import os
import re
import subprocess
import sys

import yaml

from lib.config import load_config_file, merge_configs, validate_config
from tests.helpers import ROOT

SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")


def _in_root(path):
    return str(path) if os.path.isabs(str(path)) else os.path.join(ROOT, str(path))


def snakemake_command(workdir, configfiles=None, *args, config=None, profile="profiles/local", prefix=()):
    """[*prefix, snakemake, --snakefile ROOT/Snakefile, -d WORKDIR, --profile, --configfile FILES...,
    --config k=v..., *ARGS]; configfiles is one path or a list, relative ones are under ROOT."""
    cmd = [*prefix, SNAKEMAKE, "--snakefile", os.path.join(ROOT, "Snakefile"), "-d", str(workdir)]
    if profile:
        cmd += ["--profile", os.path.join(ROOT, profile)]
    if configfiles:
        files = configfiles if isinstance(configfiles, (list, tuple)) else [configfiles]
        cmd += ["--configfile", *map(_in_root, files)]
    if config:
        cmd += ["--config", *[f"{k}={v}" for k, v in config.items()]]
    return cmd + [str(a) for a in args]


def run_snakemake(workdir, configfiles=None, *args, config=None, timeout=900, env=None,
                  profile="profiles/local", prefix=()):
    """Run snakemake_command(...) to its end; the CompletedProcess with stdout and stderr as text."""
    cmd = snakemake_command(workdir, configfiles, *args, config=config, profile=profile, prefix=prefix)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def job_counts(output):
    """{rule: count} from the last 'Job stats' table of a Snakemake run or dry run ({} without one)."""
    if "Job stats:" not in output:
        return {}
    counts = {}
    for line in output.split("Job stats:")[-1].splitlines()[3:]:  # after the header and its rule
        row = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not row:
            break
        if row.group(1) != "total":
            counts[row.group(1)] = int(row.group(2))
    return counts


def study_config(path, base="presets/tiny.yaml", **overrides):
    """Write base (a config file under ROOT, or a dict) with overrides merged in section by
    section, as Snakemake merges --configfile, to the YAML file path; return path."""
    config = base if isinstance(base, dict) else load_config_file(_in_root(base))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(merge_configs(config, overrides), f, sort_keys=False)
    return path


def resolved_config(*files):
    """The validated config Snakemake builds from these config files (relative ones under ROOT),
    later files merged into earlier ones section by section: resolved_config("config.yaml", preset)."""
    config = {}
    for path in files:
        config = merge_configs(config, load_config_file(_in_root(path)))
    return validate_config(config)


def python_env(**extra):
    """Environment for `python -m lib.*` and benchmark subprocesses: the repository importable,
    one OpenMP thread (the same sums every run, and no spinning threads on a shared machine)."""
    return {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", **extra}
