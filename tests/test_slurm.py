"""The SLURM profile: its shape, a dry run of the default study, and the real workflow on a
real one-node SLURM cluster with a fake GPU.

    .venv/bin/python -m pytest tests/test_slurm.py -q            # everything
    .venv/bin/python -m pytest tests/test_slurm.py -q -m slurm   # only the cluster runs

The cluster tests bring up tests/slurm/start.sh's cluster (root and apt-get
needed, about 20 s the first time for Debian's packages) unless it is already
up (.ci/run starts it before `make test`), and stop it at the end if they
started it. They run the real Snakefile on presets/tiny.yaml through
profiles/slurm merged with the test overlay tests/slurm/profile (see
tests/slurm/derive_profile.py): the tiny study, and one training job that is
cancelled after its first checkpoint and must resume to the same weights.
"""

import collections
import importlib.util
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

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
WORKFLOW_FILES = [SNAKEFILE, *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
TINY = REPO / "presets" / "tiny.yaml"
SLURM_DIR = REPO / "tests" / "slurm"
RESUME_OVERLAY = SLURM_DIR / "resume.yaml"
REAL_PROFILE = REPO / "profiles" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
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


# --- the profile itself -------------------------------------------------------


def test_real_profile_gives_gpu_rules_one_gpu_and_nothing_in_slurm_extra():
    profile = derive_profile.read_profile(REAL_PROFILE)
    assert profile["executor"] == "slurm"
    for key in ("jobs", "latency-wait", "retries"):
        assert key in profile, f"profiles/slurm lacks {key}"
    # rerun-incomplete comes with the workflow's default profile (profiles/default):
    # tests/test_default_profile.py checks the two combined.
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


def test_set_resources_name_real_rules_and_no_rule_sets_its_own_resources():
    # A set-resources key that names no rule is silently ignored by Snakemake: a renamed
    # rule would lose its GPU. Resources live in the profiles only, so one file per
    # cluster says what every job asks for.
    profile = derive_profile.read_profile(REAL_PROFILE)
    rules = workflow_rules()
    assert set(GPU_RULES) <= rules
    assert set(profile["set-resources"]) <= rules, set(profile["set-resources"]) - rules
    for path in WORKFLOW_FILES:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            assert not re.match(r"\s+resources:", line), f"{path}:{number}: resources belong in profiles/"


def test_local_rules_parser_reads_block_and_inline_forms(tmp_path, monkeypatch):
    smk = tmp_path / "x.smk"
    smk.write_text(
        "localrules: all, fetch\n\nrule a:\n    shell: 'true'\n\n"
        "if True:\n    localrules:\n        fetch_b,  # why\n        aggregate_c,\n\nrule d:\n    shell: 'true'\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "WORKFLOW_FILES", [smk])
    assert local_rules() == {"all", "fetch", "fetch_b", "aggregate_c"}
    assert workflow_rules() == {"a", "d"}


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
    result = subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(SNAKEFILE), "-d", str(tmp_path), "--profile", str(REAL_PROFILE), "-n"],
        capture_output=True, text=True, timeout=300,
    )
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


# --- the cluster scripts' config handling (no root, no daemons) -----------------


def _run_stop(state: Path, etc: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNIST_SAFETY_SLURM_STATE": str(state), "MNIST_SAFETY_SLURM_ETC": str(etc)}
    return subprocess.run(["bash", str(SLURM_DIR / "stop.sh")], env=env, capture_output=True, text=True,
                          timeout=60)


def _start_sh_config(state: Path) -> str:
    return f"# Written by tests/slurm/start.sh: one node.\nStateSaveLocation={state}/ctld\n"


def test_stop_takes_its_config_out_and_puts_back_what_start_saved(tmp_path):
    # a left-behind config with no controller makes every Snakemake start wait ~9 s
    state, etc = tmp_path / "state", tmp_path / "etc"
    etc.mkdir()
    (state / "etc-saved").mkdir(parents=True)
    (etc / "slurm.conf").write_text(_start_sh_config(state))
    (etc / "gres.conf").write_text("# Written by tests/slurm/start.sh: fake GPUs.\n")
    (state / "etc-saved" / "slurm.conf").write_text("ClusterName=the-real-one\n")
    done = _run_stop(state, etc)
    assert done.returncode == 0, done.stderr
    assert (etc / "slurm.conf").read_text() == "ClusterName=the-real-one\n"
    assert not (etc / "gres.conf").exists() and not (state / "etc-saved" / "slurm.conf").exists()
    assert (state / "etc" / "slurm.conf").read_text() == _start_sh_config(state)
    assert (state / "etc" / "gres.conf").exists()


def test_stop_leaves_a_config_that_is_not_its_own(tmp_path):
    state, etc = tmp_path / "state", tmp_path / "etc"
    etc.mkdir()
    state.mkdir()
    other = _start_sh_config(tmp_path / "another-state")  # another cluster of these tests
    (etc / "slurm.conf").write_text(other)
    (etc / "gres.conf").write_text("# Written by tests/slurm/start.sh: fake GPUs.\n")
    done = _run_stop(state, etc)
    assert done.returncode == 0, done.stderr
    assert (etc / "slurm.conf").read_text() == other and (etc / "gres.conf").exists()
    assert not (state / "etc").exists()


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

    by_rule = collections.Counter(rule for rule, _, _ in jobs.values())
    assert by_rule["train"] == by_rule["evaluate"] == len(grid), by_rule
    assert not set(by_rule) & local_rules(), f"local rules went to SLURM: {by_rule}"
    for job_id, (rule, tres, state) in jobs.items():
        assert state == "COMPLETED", (job_id, rule, state)
        has_gpu = "gres/gpu=1" in tres.split(",")
        assert has_gpu == (rule in GPU_RULES), (job_id, rule, tres)

    # The jobs saw the GPU SLURM gave them (a fake one: torch finds no CUDA and says so once).
    gpu_indices = fake_gpu_indices()
    for augment, oe, seed in grid:
        for stage in GPU_RULES:
            log = (workdir / "results" / "logs" / stage / augment / oe / f"seed{seed}.log").read_text()
            seen = _gpus_in_cpu_warnings(log)
            assert len(seen) == 1 and seen[0] in gpu_indices, (stage, augment, oe, seed, log)

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
        for process in (snakemake, uninterrupted):
            if process.poll() is None:
                process.kill()
                process.wait()
        cancelled = _jobs_in(workdir)
        if cancelled:
            subprocess.run(["scancel", *cancelled], timeout=30)
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
    assert [jobs[i][0] for i in job_ids] == ["train", "train"], jobs
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
