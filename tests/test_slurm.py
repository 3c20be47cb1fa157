"""The SLURM profile: its shape, a dry run, and a run on a real one-node SLURM cluster.

    .venv/bin/python -m pytest tests/test_slurm.py -q            # everything
    .venv/bin/python -m pytest tests/test_slurm.py -q -m slurm   # only the cluster run

The cluster tests bring up tests/slurm/start.sh's cluster (root and apt-get
needed, about 20 s the first time for Debian's packages) unless it is already
up, and stop it at the end if they started it. They run a stand-in workflow
(tests/slurm/standin/Snakefile) through profiles/slurm merged with the test
overlay tests/slurm/profile (see tests/slurm/derive_profile.py).
"""

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "tests" / "slurm"
REAL_PROFILE = REPO / "profiles" / "slurm"
STANDIN = SLURM_DIR / "standin" / "Snakefile"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
GPU_RULES = ("train", "evaluate")


def _load_derive_profile():
    spec = importlib.util.spec_from_file_location("derive_profile", SLURM_DIR / "derive_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


derive_profile = _load_derive_profile()


# --- the profile itself -------------------------------------------------------


def test_real_profile_gives_gpu_rules_one_gpu_and_nothing_in_slurm_extra():
    profile = derive_profile.read_profile(REAL_PROFILE)
    assert profile["executor"] == "slurm"
    for key in ("jobs", "latency-wait", "retries", "rerun-incomplete"):
        assert key in profile, f"profiles/slurm lacks {key}"
    for key in ("slurm_partition", "slurm_account", "runtime", "mem_mb"):
        assert key in profile["default-resources"], f"default-resources lacks {key}"
    for rule in GPU_RULES:
        resources = profile["set-resources"][rule]
        assert resources["gpu"] == 1 and "gres" not in resources
        assert resources["cpus_per_gpu"] >= 1
    every_resource_set = [profile["default-resources"], *profile["set-resources"].values()]
    for resources in every_resource_set:
        assert not re.search(r"--(gres|gpus)", str(resources.get("slurm_extra", "")))


def test_every_setting_in_the_profiles_has_a_comment():
    for path in (REAL_PROFILE / "config.yaml", SLURM_DIR / "profile" / "config.yaml"):
        previous = ""
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                explained = previous.startswith("#") or " # " in line
                assert explained, f"{path}:{number}: {stripped!r} has no comment above it"
            if stripped:
                previous = stripped


def test_merge_changes_only_what_the_overlay_names():
    real = {
        "jobs": 100,
        "default-resources": {"slurm_partition": "gpu", "mem_mb": 4000},
        "set-resources": {"train": {"gpu": 1, "cpus_per_gpu": 4}, "other": {"mem_mb": 1}},
    }
    overlay = {
        "latency-wait": 5,
        "default-resources": {"slurm_partition": "debug"},
        "set-resources": {"train": {"cpus_per_gpu": 1}},
    }
    merged = derive_profile.merge_profiles(real, overlay)
    assert merged == {
        "jobs": 100,
        "latency-wait": 5,
        "default-resources": {"slurm_partition": "debug", "mem_mb": 4000},
        "set-resources": {"train": {"gpu": 1, "cpus_per_gpu": 1}, "other": {"mem_mb": 1}},
    }
    assert real["set-resources"]["train"]["cpus_per_gpu"] == 4, "merge changed its input"


def test_derived_test_profile_keeps_the_real_gpu_request(tmp_path):
    path = derive_profile.write_test_profile(tmp_path / "profile")
    derived = yaml.safe_load(path.read_text())
    real = derive_profile.read_profile(REAL_PROFILE)
    assert derived["executor"] == real["executor"]
    assert derived["retries"] == real["retries"]
    assert derived["default-resources"]["slurm_partition"] == "debug"
    assert derived["slurm-init-seconds-before-status-checks"] == 2
    for rule in GPU_RULES:
        assert derived["set-resources"][rule]["gpu"] == real["set-resources"][rule]["gpu"]


def test_read_profile_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "config.yaml")):
        derive_profile.read_profile(tmp_path)


def _job_resources(dry_run_output: str) -> dict:
    """rule name -> the resources line Snakemake printed for that rule's job."""
    resources = {}
    rule = None
    for line in dry_run_output.splitlines():
        match = re.match(r"(?:local)?rule (\w+):", line.strip())
        if match:
            rule = match.group(1)
        elif line.strip().startswith("resources:") and rule:
            resources[rule] = line.strip()
    return resources


def test_profile_dry_run_plans_the_workflow_with_gpus(tmp_path):
    # The lead retargets this at the real Snakefile (the default study).
    result = subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(STANDIN), "-d", str(tmp_path), "--profile", str(REAL_PROFILE), "-n"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    resources = _job_resources(result.stdout + result.stderr)
    assert set(resources) >= {"fetch", "train", "evaluate", "report"}
    for rule in GPU_RULES:
        assert "gpu=1" in resources[rule], resources[rule]
    for rule in ("fetch", "report"):
        assert "gpu=" not in resources[rule], resources[rule]


# --- a real cluster -------------------------------------------------------------


def _cluster_cannot_start() -> str:
    """Why tests/slurm/start.sh cannot run here; empty when it can."""
    if os.geteuid() != 0:
        return "not root: tests/slurm/start.sh installs packages and starts daemons"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and apt-get is not available to install it"
    return ""


@pytest.fixture(scope="session")
def slurm_cluster():
    """Bring up the test cluster if it is not up; stop it afterwards if we started it."""
    reason = _cluster_cannot_start()
    if reason:
        pytest.skip(f"!!! SLURM CLUSTER TESTS NOT RUN: {reason} !!!")
    started = subprocess.run(
        [str(SLURM_DIR / "start.sh")], capture_output=True, text=True, timeout=900
    )
    assert started.returncode == 0, f"tests/slurm/start.sh failed:\n{started.stderr}"
    we_started_it = "already up" not in started.stderr
    yield
    if we_started_it:
        subprocess.run([str(SLURM_DIR / "stop.sh")], capture_output=True, timeout=120)


def _slurm_logs(workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    return "\n".join(f"--- {log}\n{log.read_text()}" for log in logs)


def slurm_snakemake_command(snakefile: Path, workdir: Path, *extra_args: str) -> list:
    """The snakemake command that runs snakefile in workdir through the derived test profile."""
    profile = derive_profile.write_test_profile(workdir.parent / "slurm-test-profile").parent
    return [*SNAKEMAKE, "--snakefile", str(snakefile), "-d", str(workdir), "--profile", str(profile), *extra_args]


def submitted_job_ids(snakemake_output: str) -> list:
    """The SLURM job ids Snakemake reported submitting, in order."""
    return re.findall(r"has been submitted with SLURM jobid (\d+)", snakemake_output)


def sacct_jobs(job_ids: list) -> dict:
    """{SLURM job id: (rule name, AllocTRES, State)} for job_ids, read with sacct."""
    sacct = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,Comment,AllocTRES,State"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    jobs = {}
    for line in sacct.stdout.splitlines():
        job_id, comment, tres, state = line.split("|")
        # The plugin's comment: rule_<rule> or rule_<rule>_wildcards_<values>.
        rule = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", comment).group(1)
        jobs[job_id] = (rule, tres, state)
    assert sorted(jobs) == sorted(job_ids), f"sacct does not know every job:\n{sacct.stdout}"
    return jobs


def run_through_slurm(snakefile: Path, workdir: Path, *extra_args: str) -> dict:
    """Run snakefile in workdir through the derived test profile; sacct_jobs of what it submitted."""
    result = subprocess.run(
        slurm_snakemake_command(snakefile, workdir, *extra_args),
        capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output + _slurm_logs(workdir)
    job_ids = submitted_job_ids(output)
    assert job_ids, "no job went through SLURM:\n" + output
    return sacct_jobs(job_ids)


def fake_gpu_indices() -> set:
    """The CUDA_VISIBLE_DEVICES values a job on the test node can get: "0".. "N-1"."""
    gres = subprocess.run(
        ["sinfo", "-h", "-n", socket.gethostname(), "-o", "%G"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()
    count = int(re.fullmatch(r"gpu:(\d+)", gres).group(1))
    return {str(index) for index in range(count)}


def _key_values(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.mark.slurm
def test_standin_runs_gpu_rules_as_slurm_jobs_with_a_gpu(slurm_cluster, tmp_path):
    workdir = tmp_path / "run"
    jobs = run_through_slurm(STANDIN, workdir)

    assert sorted(rule for rule, _, _ in jobs.values()) == sorted(GPU_RULES), jobs
    for job_id, (rule, tres, state) in jobs.items():
        assert state == "COMPLETED", (job_id, rule, state)
        assert "gres/gpu=1" in tres.split(","), (job_id, rule, tres)

    for output in ("results/models/seed1/train.txt", "results/logits/seed1/evaluate.txt"):
        seen = _key_values(workdir / output)
        # "0" on the default test node, which has one GPU.
        assert seen["CUDA_VISIBLE_DEVICES"] in fake_gpu_indices(), (output, seen)
        assert seen["HOSTNAME"] == socket.gethostname(), (output, seen)
        assert seen["SLURM_JOB_ID"] in jobs, (output, seen)
    report = (workdir / "results" / "report.txt").read_text().splitlines()
    assert report[0] == "SLURM_JOB_ID=none", "the local rule report ran inside a SLURM job"


def _cancel_jobs_in(workdir: Path) -> None:
    """scancel every queued or running job whose working directory is workdir."""
    queue = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True, timeout=30)
    job_ids = [line.split()[0] for line in queue.stdout.splitlines() if line.split()[1:] == [str(workdir)]]
    if job_ids:
        subprocess.run(["scancel", *job_ids], timeout=30)


@pytest.mark.slurm
def test_a_cancelled_gpu_job_is_retried_not_waited_for(slurm_cluster, tmp_path):
    # scancel stands in for preemption; sacct would call the job "CANCELLED by 0",
    # which plugin 2.8 waits for forever, hence the profile's squeue status command.
    workdir = tmp_path / "run"
    first_attempt = workdir / "results" / "first_attempt.txt"
    log_path = tmp_path / "snakemake.log"
    command = slurm_snakemake_command(SLURM_DIR / "standin" / "cancelled_once.smk", workdir)
    with open(log_path, "w") as log:
        snakemake = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        # A safeguard, not a timing check: the job normally starts within seconds.
        deadline = time.monotonic() + 300
        while not first_attempt.exists():
            assert snakemake.poll() is None, "snakemake ended early:\n" + log_path.read_text()
            assert time.monotonic() < deadline, "train never started:\n" + log_path.read_text()
            time.sleep(0.5)
        cancelled_id = first_attempt.read_text().strip()
        subprocess.run(["scancel", cancelled_id], check=True, timeout=30)
        try:
            returncode = snakemake.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail("snakemake still waits for the cancelled job:\n" + log_path.read_text())
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
            snakemake.wait()
            _cancel_jobs_in(workdir)
    output = log_path.read_text()
    assert returncode == 0, output + _slurm_logs(workdir)

    job_ids = submitted_job_ids(output)
    jobs = sacct_jobs(job_ids)
    assert job_ids[0] == cancelled_id and len(job_ids) == 2, output
    assert [jobs[i][0] for i in job_ids] == ["train", "train"]
    assert jobs[job_ids[0]][2].startswith("CANCELLED"), jobs
    assert jobs[job_ids[1]][2] == "COMPLETED", jobs
    for _, tres, _ in jobs.values():
        assert "gres/gpu=1" in tres.split(","), jobs
    seen = _key_values(workdir / "results" / "train.txt")
    assert seen == {"RESUMED_FROM": cancelled_id, "SLURM_JOB_ID": job_ids[1]}
