"""Run the real workflow from tests: a copy-free run in a temporary working directory.

    from tests.workflow import run_snakemake, ROOT
    result = run_snakemake(tmp_path, "presets/tiny.yaml", "-n")
    assert result.returncode == 0, result.stdout + result.stderr
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")


def run_snakemake(workdir, configfile=None, *args, config=None, timeout=900, env=None, profile="profiles/local"):
    """snakemake --snakefile ROOT/Snakefile -d WORKDIR [--configfile] [--config k=v ...] ARGS."""
    cmd = [SNAKEMAKE, "--snakefile", os.path.join(ROOT, "Snakefile"), "-d", str(workdir)]
    if profile:
        cmd += ["--profile", os.path.join(ROOT, profile)]
    if configfile:
        path = configfile if os.path.isabs(str(configfile)) else os.path.join(ROOT, configfile)
        cmd += ["--configfile", str(path)]
    if config:
        cmd += ["--config", *[f"{k}={v}" for k, v in config.items()]]
    cmd += [str(a) for a in args]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
