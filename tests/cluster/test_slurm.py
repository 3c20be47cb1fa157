"""The real workflow on a real one-node SLURM cluster with fake GPUs, through profiles/slurm
(its shape: tests/unit/test_slurm_profile.py; its plan: tests/workflow/test_slurm_profile.py).

    .venv/bin/python -m pytest tests/cluster -q

The cluster tests bring up tests/slurm/start.sh's cluster (root and apt-get
needed, about 20 s the first time for Debian's packages) unless it is already
up (.ci/run starts it before `make test`), and stop it at the end if they
started it. They run the real Snakefile on presets/tiny.yaml through
profiles/slurm merged with the test overlay tests/slurm/profile (see
tests/slurm/derive_profile.py): the tiny study, and one training job that is
cancelled after its first checkpoint and must resume to the same weights.
"""

import collections
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tests.helpers.slurm import (CPU_PROFILE, GPU_RULES, REAL_PROFILE, REPO, RESUME_OVERLAY, SLURM_DIR, SNAKEFILE,
                                 TINY, derive_profile, local_rules, study_grid)

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# The SLURM comment of a model's group job (profiles/slurm: groups, "model_{oe}") starts
# with this, then its oe and rules: rule_model_oe_evaluate_train, or rule_model_baseline_train
# when the model alone is asked for.
MODEL_JOB = "model_"


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


def slurm_snakemake_command(snakefile: Path, workdir: Path, *extra_args: str, real_profile: Path = REAL_PROFILE) -> list:
    """The snakemake command that runs snakefile in workdir through the test profile derived
    from real_profile (profiles/slurm, or profiles/slurm-cpu)."""
    profile = derive_profile.write_test_profile(workdir.parent / f"test-{real_profile.name}", real_profile).parent
    return [*SNAKEMAKE, "--snakefile", str(snakefile), "-d", str(workdir), "--profile", str(profile), *extra_args]


def submitted_job_ids(snakemake_output: str) -> list:
    """The SLURM job ids Snakemake reported submitting, in order."""
    return re.findall(r"has been submitted with SLURM jobid (\d+)", snakemake_output)


def sacct_jobs(job_ids: list) -> dict:
    """{SLURM job id: (rule name, AllocTRES, State)} for job_ids, read with sacct (a group
    job's "rule name" is the group's and its rules', e.g. model_evaluate_train)."""
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


def run_through_slurm(snakefile: Path, workdir: Path, *extra_args: str, real_profile: Path = REAL_PROFILE) -> dict:
    """Run snakefile in workdir through the derived test profile; sacct_jobs of what it submitted."""
    result = subprocess.run(
        slurm_snakemake_command(snakefile, workdir, *extra_args, real_profile=real_profile),
        capture_output=True, text=True, timeout=900,
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


def _gpus_in_cpu_warnings(log_text: str) -> list:
    """The CUDA_VISIBLE_DEVICES value of every CPU-fallback warning in a job's log."""
    return re.findall(r"WARNING no CUDA device found \(CUDA_VISIBLE_DEVICES=([^,]*),", log_text)


def _numbers(table: pd.DataFrame) -> pd.Series:
    values = pd.to_numeric(table["value"], errors="coerce")
    assert values.notna().all() and values.map(math.isfinite).all(), table[values.isna()]
    return values


@pytest.mark.slurm
def test_tiny_study_runs_train_and_evaluate_as_slurm_jobs_with_a_gpu(slurm_cluster, tmp_path):
    workdir = tmp_path / "run"
    jobs = run_through_slurm(SNAKEFILE, workdir, "--configfile", str(TINY))
    grid = study_grid(REPO / "config.yaml", TINY)

    # One SLURM job per model, with its train and evaluate jobs; the CPU-only jobs without a GPU.
    by_rule = collections.Counter(rule for rule, _, _ in jobs.values())
    model_jobs = [rule for rule in by_rule.elements() if rule.startswith(MODEL_JOB)]
    assert len(model_jobs) == len(grid) and all(rule.endswith("_evaluate_train") for rule in model_jobs), by_rule
    assert not set(by_rule) & (local_rules() | set(GPU_RULES)), f"not in a model's job: {by_rule}"
    threads = yaml.safe_load((SLURM_DIR / "profile" / "config.yaml").read_text())["set-threads"]
    for job_id, (rule, tres, state) in jobs.items():
        assert state == "COMPLETED", (job_id, rule, state)
        allocated = tres.split(",")
        assert ("gres/gpu=1" in allocated) == rule.startswith(MODEL_JOB), (job_id, rule, tres)
        if rule.startswith(MODEL_JOB):
            assert f"cpu={max(threads.values())}" in allocated, (job_id, rule, tres)

    # The jobs saw the GPU SLURM gave them (a fake one: torch finds no CUDA and says so
    # once), and ran torch on the threads they asked for, on as many cores.
    gpu_indices = fake_gpu_indices()
    for augment, oe, seed in grid:
        for stage in GPU_RULES:
            log = (workdir / "results" / "logs" / stage / augment / oe / f"seed{seed}.log").read_text()
            seen = _gpus_in_cpu_warnings(log)
            assert len(seen) == 1 and seen[0] in gpu_indices, (stage, augment, oe, seed, log)
            assert f"threads {threads[stage]} of {threads[stage]} usable cores" in log, log

    results = workdir / "results"
    assert (results / "report.html").stat().st_size > 0
    report = (results / "report.html").read_text()
    models = {(a, o, str(s)) for a, o, s in grid}
    for augment, oe, seed in grid:
        train_log = pd.read_csv(results / "models" / augment / oe / f"seed{seed}" / "train_log.csv")
        [device] = set(train_log["device"])
        assert device.startswith("CPU: ") and device in report
    accuracy = pd.read_csv(results / "tables" / "accuracy.csv", dtype={"seed": str})
    values = _numbers(accuracy[accuracy["metric"] == "accuracy"])
    assert ((values > 0) & (values <= 1)).all()
    assert set(zip(accuracy["augment"], accuracy["oe"], accuracy["seed"])) == models
    detection = pd.read_csv(results / "tables" / "detection.csv", dtype={"seed": str})
    _numbers(detection)
    tiny = yaml.safe_load(TINY.read_text())
    for (augment, oe, seed), rows in detection.groupby(["augment", "oe", "seed"]):
        assert set(zip(rows["set"], rows["score"])) == {
            (ood, score) for ood in tiny["ood_sets"] for score in tiny["scores"]}
    assert set(zip(detection["augment"], detection["oe"], detection["seed"])) == models


def _jobs_in(workdir: Path) -> list:
    """Ids of the queued or running jobs whose working directory is workdir."""
    queue = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in queue.stdout.splitlines() if line.split()[1:] == [str(workdir)]]


def _stop_runs(workdir: Path, *processes: subprocess.Popen):
    """Kill what is left of processes and cancel what is left of workdir's SLURM jobs."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    left = _jobs_in(workdir)
    if left:
        subprocess.run(["scancel", *left], timeout=30)


def _processes_mentioning(path: Path) -> list:
    """(pid, command line) of every process whose command line names path."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue  # not a process folder, or the process has ended
        command = " ".join(arg.decode(errors="replace") for arg in argv)
        if proc.name.isdigit() and str(path) in command:
            found.append((int(proc.name), command))
    return found


def _weights(model_file: Path) -> dict:
    return torch.load(model_file, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slurm
def test_a_cancelled_training_job_resumes_from_its_checkpoint_to_the_same_weights(slurm_cluster, tmp_path):
    # scancel stands in for preemption: the profile's retry resubmits the job, and the
    # new job must continue from the last epoch checkpoint, not start over, and end
    # exactly where an uninterrupted run of the same model ends (CPU: bit for bit).
    model = "results/models/none/baseline/seed1"
    checkpoint = "results/checkpoints/none/baseline/seed1.pt"
    configs = ["--configfile", str(TINY), str(RESUME_OVERLAY)]
    epochs = yaml.safe_load(RESUME_OVERLAY.read_text())["train"]["epochs"]
    workdir, reference = tmp_path / "run", tmp_path / "reference"
    log_path, reference_log = tmp_path / "snakemake.log", tmp_path / "reference.log"

    # The uninterrupted run of the same model, on this machine without SLURM, side by side.
    with open(reference_log, "w") as log:
        uninterrupted = subprocess.Popen(
            [*SNAKEMAKE, "--snakefile", str(SNAKEFILE), "-d", str(reference),
             "--profile", str(REPO / "profiles" / "local"), f"{model}/model.pt", *configs],
            stdout=log, stderr=subprocess.STDOUT)
    with open(log_path, "w") as log:
        snakemake = subprocess.Popen(
            slurm_snakemake_command(SNAKEFILE, workdir, f"{model}/model.pt", *configs),
            stdout=log, stderr=subprocess.STDOUT)
    try:
        # A safeguard, not a timing check: the first epoch normally ends within a minute.
        deadline = time.monotonic() + 300
        while not (workdir / checkpoint).exists():
            assert snakemake.poll() is None, "snakemake ended early:\n" + log_path.read_text()
            assert time.monotonic() < deadline, "no checkpoint was written:\n" + log_path.read_text()
            time.sleep(0.1)
        running = _jobs_in(workdir)
        assert len(running) == 1, (
            f"expected the one training job in the queue, found {running}; if it already ended, "
            f"raise train.epochs in {RESUME_OVERLAY.name}\n" + log_path.read_text())
        [cancelled_id] = running
        subprocess.run(["scancel", cancelled_id], check=True, timeout=30)
        try:
            returncode = snakemake.wait(timeout=300)
            reference_returncode = uninterrupted.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail("a run did not finish:\n" + log_path.read_text() + reference_log.read_text())
    finally:
        _stop_runs(workdir, snakemake, uninterrupted)
    output = log_path.read_text()
    assert returncode == 0, output + _slurm_logs(workdir)
    assert reference_returncode == 0, reference_log.read_text()
    # SLURM kills what is left of the cancelled job KillWait (30 s) after scancel.
    deadline = time.monotonic() + 90
    while _processes_mentioning(workdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_mentioning(workdir) == [], "processes outlived their SLURM job"

    job_ids = submitted_job_ids(output)
    jobs = sacct_jobs(job_ids)
    assert job_ids[0] == cancelled_id and len(job_ids) == 2, output
    assert [jobs[i][0] for i in job_ids] == [MODEL_JOB + "baseline_train"] * 2, jobs
    assert jobs[job_ids[0]][2].startswith("CANCELLED"), (
        f"the job ended as {jobs[job_ids[0]][2]} before it was cancelled; "
        f"raise train.epochs in {RESUME_OVERLAY.name}")
    assert jobs[job_ids[1]][2] == "COMPLETED", jobs
    for _, tres, _ in jobs.values():
        assert "gres/gpu=1" in tres.split(","), jobs

    train_log = (workdir / "results" / "logs" / "train" / "none" / "baseline" / "seed1.log").read_text()
    resumed = re.search(rf"resuming from {re.escape(checkpoint)} at epoch (\d+) of {epochs}", train_log)
    assert resumed and int(resumed.group(1)) >= 2, train_log
    assert not (workdir / checkpoint).exists(), "the checkpoint outlived the finished model"

    got, want = _weights(workdir / model / "model.pt"), _weights(reference / model / "model.pt")
    assert got.keys() == want.keys()
    different = [name for name in want if not torch.equal(got[name], want[name])]
    assert not different, f"resumed weights differ from the uninterrupted run's: {different}"
    columns = ["epoch", "loss", "train_accuracy", "lr", "device"]
    got_log = pd.read_csv(workdir / model / "train_log.csv")[columns]
    want_log = pd.read_csv(reference / model / "train_log.csv")[columns]
    assert list(got_log["epoch"]) == list(range(1, epochs + 1))
    pd.testing.assert_frame_equal(got_log, want_log, check_exact=True)


def _wait_for_running_job(workdir: Path, snakemake: subprocess.Popen, log_path: Path, timeout_s: float = 300) -> str:
    """The id of the one job of workdir once squeue shows it running."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert snakemake.poll() is None, "snakemake ended early:\n" + log_path.read_text()
        assert time.monotonic() < deadline, "no job started running:\n" + log_path.read_text()
        running = [job for job in _jobs_in(workdir) if _job_state(job) == "RUNNING"]
        if running:
            return running[0]
        time.sleep(0.5)


def _job_state(job_id: str) -> str:
    found = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return found.stdout.strip()


# The longest a cancelled job may go unnoticed: the status-check interval at the time of the
# cancel (the test profile's 2 s, plus 10 s per round of checks without news, a few rounds
# at most here) and Snakemake's wind-down. Before workflow/slurm_status.py, sacct's
# "CANCELLED by 0" kept the run waiting until it was interrupted.
CANCEL_NOTICED_S = 90


@pytest.mark.slurm
@pytest.mark.parametrize("status_command", ["squeue", "sacct"])
def test_a_cancelled_job_ends_the_run_within_a_poll_interval_under_each_status_command(
        slurm_cluster, tmp_path, status_command, note):
    workdir, log_path = tmp_path / "run", tmp_path / "snakemake.log"
    # No retry: the run must end, as failed, once the cancel is noticed (the test above
    # shows the retry that follows with retries).
    command = slurm_snakemake_command(
        SNAKEFILE, workdir, "results/models/none/baseline/seed1/model.pt", "--configfile", str(TINY),
        str(RESUME_OVERLAY), "--retries", "0", "--slurm-status-command", status_command)
    with open(log_path, "w") as log:
        snakemake = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        job_id = _wait_for_running_job(workdir, snakemake, log_path)
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        cancelled_at = time.monotonic()
        try:
            returncode = snakemake.wait(timeout=CANCEL_NOTICED_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run still waits {CANCEL_NOTICED_S} s after its job was cancelled "
                        f"({status_command}):\n" + log_path.read_text())
        noticed_s = time.monotonic() - cancelled_at
    finally:
        _stop_runs(workdir, snakemake)
    output = log_path.read_text()
    assert returncode != 0, output
    assert "Error in group model_baseline" in output and re.search(rf"JOB {job_id} ON \S+ CANCELLED", output), output
    if status_command == "sacct":
        assert "CANCELLED by 0, counted as CANCELLED (workflow/slurm_status.py)" in output, output
    note(f"{status_command}: the cancel was noticed and the run ended {noticed_s:.1f} s after scancel")


@pytest.mark.slurm
def test_the_cpu_only_profile_runs_a_model_on_the_cores_it_asks_for_without_a_gpu(slurm_cluster, tmp_path):
    workdir = tmp_path / "run"
    cores = 2  # the test node's CPUs: one job at a time uses all of them
    jobs = run_through_slurm(SNAKEFILE, workdir, "results/logits/none/baseline/seed1/id_test.npz",
                             "--configfile", str(TINY), "--set-threads", f"train={cores}", f"evaluate={cores}",
                             real_profile=CPU_PROFILE)
    model_jobs = {job_id: job for job_id, job in jobs.items() if job[0].startswith(MODEL_JOB)}
    assert [rule for rule, _, _ in model_jobs.values()] == [MODEL_JOB + "baseline_evaluate_train"], jobs
    for job_id, (rule, tres, state) in jobs.items():
        assert state == "COMPLETED" and "gres/gpu" not in tres, (job_id, rule, tres, state)
    [(_, tres, _)] = model_jobs.values()
    assert f"cpu={cores}" in tres.split(","), tres
    for stage in GPU_RULES:
        log = (workdir / "results" / "logs" / stage / "none" / "baseline" / "seed1.log").read_text()
        assert _gpus_in_cpu_warnings(log) == ["unset"], log
        assert f"threads {cores} of {cores} usable cores" in log, log
