"""The workflow's default profile in real runs: the SLURM profile still plans every job with
its resources on top of it, and plain `snakemake --cores N` keeps the cheap `run:` rules
inside its own process (tests/unit/test_default_profile.py checks the profile files).

Snakemake names each `run:` job it hands to a Snakemake subprocess in one debug line of its
log, `spawned job: <command>` (executors/local.py), written with --verbose only; the slow
tests read .snakemake/log/ for it, and one of them makes sure that line does show up when
the default profile is left out, so its absence means something.
"""
import glob
import os
import re

import pytest

from tests.helpers import ROOT
from tests.helpers.slurm import REAL_PROFILE, derive_profile
from tests.helpers.workflow_runs import run_snakemake

PROFILES = os.path.join(ROOT, "profiles")
SPAWNED = "spawned job: "


def run_rules() -> set:
    """Every rule of workflow/rules/*.smk whose action is a `run:` block."""
    found = set()
    for path in glob.glob(os.path.join(ROOT, "workflow", "rules", "*.smk")):
        rule = None
        with open(path) as f:
            for line in f:
                header = re.match(r"(?:rule|checkpoint) (\w+):", line)
                if header:
                    rule = header.group(1)
                elif rule and re.match(r"\s+run:\s*$", line):
                    found.add(rule)
    return found


def snakemake_log(workdir) -> str:
    [log] = glob.glob(os.path.join(str(workdir), ".snakemake", "log", "*.snakemake.log"))
    with open(log) as f:
        return f.read()


# --- the SLURM profile on top of it ----------------------------------------------


def test_slurm_profile_dry_run_still_plans_every_job_with_the_slurm_resources(tmp_path):
    result = run_snakemake(tmp_path, "presets/tiny.yaml", "-n", profile="profiles/slurm", timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    slurm = re.escape(os.path.join(PROFILES, "slurm"))
    assert re.search(rf"Using profiles {slurm} and workflow specific profile \S*profiles/default ", output), output[:2000]
    own = derive_profile.read_profile(REAL_PROFILE)
    # train and evaluate sit inside their model's group job, indented one level deeper
    resources = re.findall(r"^ *rule (train|evaluate|score):\n(?: +.*\n)*? +resources: (.*)$", output, re.MULTILINE)
    assert {rule for rule, _ in resources} == {"train", "evaluate", "score"}, output[-4000:]
    for rule, line in resources:
        # the GPU partition and a GPU for train and evaluate only (the profile's set-resources);
        # the other jobs keep the cluster's default partition
        gpu_job = rule in own["set-resources"]
        partition = f"slurm_partition={own['set-resources']['train']['slurm_partition']}"
        assert (partition in line.split(", ")) == gpu_job, (rule, line)
        assert ("gpu=1" in line.split(", ")) == gpu_job, (rule, line)
    assert not os.path.exists(tmp_path / "results"), "a dry run wrote results"


# --- real runs --------------------------------------------------------------------


@pytest.mark.slow
def test_the_spawned_job_log_line_shows_up_without_the_default_profile(tmp_path):
    # leak_marks is a `run:` rule with no input: one job, seconds.
    spawned_dir, threaded_dir = tmp_path / "spawned", tmp_path / "threaded"
    for workdir, extra in ((spawned_dir, ["--workflow-profile", "none"]), (threaded_dir, [])):
        result = run_snakemake(workdir, None, "--cores", "1", "--verbose", *extra, "results/tables/leaks.json",
                               profile=None, timeout=300)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        assert (workdir / "results" / "tables" / "leaks.json").exists()
    spawned = [line for line in snakemake_log(spawned_dir).splitlines() if line.startswith(SPAWNED)]
    assert len(spawned) == 1 and "--allowed-rules leak_marks" in spawned[0], spawned
    assert SPAWNED not in snakemake_log(threaded_dir)


@pytest.mark.slow
def test_plain_snakemake_runs_the_tiny_study_without_a_snakemake_process_per_run_job(tiny_study_run):
    workdir, result = tiny_study_run  # plain `snakemake --cores all --verbose`, exit status checked
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "workflow specific profile" in output and "Using profiles" not in output
    log = snakemake_log(workdir)
    finished = set(re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", log, re.MULTILINE))
    rules = run_rules()
    assert {"score", "model_metrics", "aggregate", "leak_marks"} <= rules
    assert rules <= finished, f"run: rules that never ran: {rules - finished}"
    spawned = [line for line in log.splitlines() if line.startswith(SPAWNED)]
    assert not spawned, f"{len(spawned)} jobs ran in a Snakemake subprocess, e.g. {spawned[0]}"
    assert (workdir / "results" / "report.html").stat().st_size > 0
