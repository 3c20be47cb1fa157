"""The workflow's default profile, profiles/default: Snakemake adds it by itself to every run
of this Snakefile, so plain `snakemake --cores N` keeps the cheap `run:` rules inside its own
process as `--profile profiles/local` does, and the executor profiles combine with it. Here
the profile files and how Snakemake's own argument parser combines them; the runs are in
tests/workflow/test_default_profile.py.

    .venv/bin/python -m pytest -q tests/unit/test_default_profile.py   # seconds
"""
import os

import pytest
import yaml
from snakemake.cli import parse_args
from snakemake.utils import available_cpu_count

from benchmarks import bench_workflow
from tests.helpers import ROOT

SNAKEFILE = os.path.join(ROOT, "Snakefile")
PROFILES = os.path.join(ROOT, "profiles")
EXECUTOR_PROFILES = ("local", "slurm", "slurm-cpu")


def profile_settings(name: str) -> dict:
    with open(os.path.join(PROFILES, name, "config.yaml")) as f:
        return yaml.safe_load(f)


def effective_options(monkeypatch, folder, *argv):
    """The options `snakemake ARGV`, started in folder, runs with: Snakemake's own parse_args,
    the first thing the command does, merges the profiles into them."""
    monkeypatch.delenv("SNAKEMAKE_PROFILE", raising=False)  # a user's global profile would join in
    monkeypatch.chdir(folder)
    _, args = parse_args(list(argv))
    return args


# --- the profile files ----------------------------------------------------------


def test_default_profile_shares_no_key_with_the_executor_profiles():
    # The default profile wins over any --profile key by key: a key in both would silently
    # throw away the executor profile's value (profiles/slurm's latency-wait: 60, say).
    default = profile_settings("default")
    assert {"force-use-threads", "rerun-incomplete", "keep-going"} <= set(default), default
    for name in EXECUTOR_PROFILES:
        shared = set(default) & set(profile_settings(name))
        assert not shared, f"profiles/{name} and profiles/default both set {sorted(shared)}"


def test_every_setting_of_the_default_and_local_profiles_has_a_comment():
    for name in ("default", "local"):
        previous = ""
        path = os.path.join(PROFILES, name, "config.yaml")
        with open(path) as f:
            for number, line in enumerate(f, start=1):
                stripped = line.strip()
                if stripped and not stripped.startswith("#"):
                    assert previous.startswith("#") or " # " in line, f"{path}:{number}: {stripped!r} has no comment"
                if stripped:
                    previous = stripped


# --- how Snakemake combines them (its own argument parser, no workflow run) -----------


@pytest.mark.parametrize("where", ["repository", "elsewhere"])
def test_plain_snakemake_picks_up_the_default_profile(monkeypatch, tmp_path, where):
    # From the repository (profiles/default under the current folder) and from any other
    # folder with --snakefile (profiles/default beside the Snakefile), as the tests run it.
    argv = ["--cores", "2"] if where == "repository" else ["--snakefile", SNAKEFILE, "--cores", "2"]
    folder = ROOT if where == "repository" else tmp_path
    args = effective_options(monkeypatch, folder, *argv)
    assert args.force_use_threads and args.rerun_incomplete and args.keep_going
    assert args.cores == 2 and args.executor is None
    left_out = effective_options(monkeypatch, folder, *argv, "--workflow-profile", "none")
    assert not left_out.force_use_threads, "force-use-threads is on without the default profile"


def test_executor_profiles_keep_their_own_settings_on_top_of_the_default(monkeypatch, tmp_path):
    local = effective_options(monkeypatch, tmp_path, "--snakefile", SNAKEFILE,
                              "--profile", os.path.join(PROFILES, "local"))
    assert local.cores == available_cpu_count() and local.executor is None
    slurm = effective_options(monkeypatch, tmp_path, "--snakefile", SNAKEFILE,
                              "--profile", os.path.join(PROFILES, "slurm"))
    own = profile_settings("slurm")
    assert slurm.executor == "slurm" and slurm.jobs == own["jobs"]
    assert slurm.latency_wait == own["latency-wait"] and slurm.retries == own["retries"]
    assert slurm.printshellcmds is own["printshellcmds"]
    for args in (local, slurm):
        assert args.force_use_threads and args.rerun_incomplete and args.keep_going
    # the command line still wins over both profiles
    typed = effective_options(monkeypatch, tmp_path, "--snakefile", SNAKEFILE,
                              "--profile", os.path.join(PROFILES, "slurm"), "--latency-wait", "3")
    assert typed.latency_wait == 3


# --- the benchmark line ----------------------------------------------------------------


def test_bench_demo_times_plain_snakemake_against_the_local_profile(monkeypatch):
    commands = []

    def fake_timed(command, cwd):
        commands.append(command)
        seconds = 11.0 if "--profile" in command else 12.1
        return seconds, "80 of 80 steps (100%) done\n"
    monkeypatch.setattr(bench_workflow, "_timed", fake_timed)
    demo, plain = bench_workflow.bench_demo(goal_s=180.0, configfile="presets/tiny.yaml")
    cores = str(available_cpu_count())
    assert "--profile" not in commands[0] and commands[0][commands[0].index("--cores") + 1] == cores
    assert commands[1][commands[1].index("--profile") + 1] == os.path.join(PROFILES, "local")
    assert "--cores" not in commands[1]
    assert demo["ours"] == 11.0 and demo["met"] and "80 jobs" in demo["detail"]
    assert plain["ours"] == 12.1 and plain["reference"] == 11.0 and plain["unit"] == "s"
    assert plain["ratio"] == pytest.approx(1.1) and plain["met"] and plain["goal"] == "<= 1.2"
    assert f"--cores {cores}" in plain["name"]
    monkeypatch.setattr(bench_workflow, "_timed", lambda command, cwd: (
        11.0 if "--profile" in command else 13.5, "80 of 80 steps (100%) done\n"))
    _, slow = bench_workflow.bench_demo(configfile="presets/tiny.yaml")
    assert not slow["met"]
