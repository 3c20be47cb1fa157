"""The SLURM profile plans the default study with a GPU for each training and evaluation job
and every cheap rule local: `snakemake --profile profiles/slurm -n`, no cluster needed.
"""
import collections
import re

from tests.helpers.slurm import GPU_RULES, REPO, local_rules, must_be_local, slurm_plan, study_grid
from tests.helpers.workflow_runs import run_snakemake


def _planned_jobs(dry_run_output: str) -> tuple:
    """({rule: job count}, {rule: its jobs' resources line}) from a dry run's job list."""
    counts, resources = collections.Counter(), {}
    rule = None
    for line in dry_run_output.splitlines():
        match = re.match(r"(?:local)?rule (\w+):$", line.strip())
        if match:
            rule = match.group(1)
            counts[rule] += 1
        elif line.strip().startswith("resources:") and rule:
            resources[rule] = line.strip()
    return counts, resources


def test_profile_dry_run_plans_the_default_study_with_a_gpu_per_train_and_evaluate_job(tmp_path):
    result = run_snakemake(tmp_path, None, "-n", profile="profiles/slurm", timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    counts, resources = _planned_jobs(output)
    n_models = len(study_grid(REPO / "config.yaml"))
    assert counts["train"] == counts["evaluate"] == n_models, counts
    for rule in GPU_RULES:
        assert "gpu=1" in resources[rule].split(", "), resources[rule]
    for rule, line in resources.items():
        if rule not in GPU_RULES:
            assert "gpu=" not in line, (rule, line)
    local = local_rules()
    assert not local & set(GPU_RULES), local
    for rule in counts:
        if must_be_local(rule):
            assert rule in local, f"rule {rule} would be submitted as a SLURM job; add it to localrules"
    assert not (tmp_path / "results").exists(), "a dry run wrote results"

    # One SLURM job per model at most: its train and evaluate jobs share a group job
    # (an oe_tune model shares its baseline's); the CPU-only jobs ask for no GPU.
    jobs = slurm_plan.planned_jobs(output)
    groups = collections.defaultdict(list)
    for job in jobs:
        if job["rule"] in GPU_RULES:
            assert job["group"] is not None, job
            groups[id(job["group"])].append(job["rule"])
        elif job["rule"] not in local:
            assert "gpu" not in job["resources"] and "slurm_partition" not in job["resources"], job
    assert len(groups) <= n_models
    for rules in groups.values():
        assert rules.count("train") == rules.count("evaluate") >= 1, rules
    lines, submissions = slurm_plan.summarize(jobs, local)
    cpu_only = sum(1 for job in jobs if job["group"] is None and job["rule"] not in local | {"all"})
    assert submissions == len(groups) + cpu_only, lines
    assert lines[0] == f"SLURM submissions: {submissions}", lines
