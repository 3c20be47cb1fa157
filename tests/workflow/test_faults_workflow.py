"""Fault injection through the real workflow (snakemake, profiles/local, a one-model study):
a run killed during training, two runs on one folder, determinism, and config strings kept
away from the shell.

Two runs of the same config share the machine at once: `first` runs uninterrupted;
`killed` is SIGKILLed with its jobs during training, unlocked and rerun. The rerun must
give bit-identical logits, tables and weights to `first`: the same config and seed twice
on the CPU, one of them resumed from a checkpoint. (tests/unit/test_faults_training.py checks
the resume alone, so a difference here that it does not show is in the workflow.)
"""
import html
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.faults import (assert_same_arrays, assert_same_logits, assert_same_tables, files_under,
                          model_state, read_only_folder, write_study_config)
from tests.helpers.workflow_runs import snakemake_command

pytestmark = pytest.mark.slow

MODEL = "results/models/saltpepper/oe/seed1/model.pt"
CHECKPOINT = "results/checkpoints/saltpepper/oe/seed1.pt"
LOCK_MESSAGE = "Directory cannot be locked"


def snakemake(workdir, configfile, *args):
    cmd = snakemake_command(workdir, configfile, *args)
    # Own session: a SIGKILL to the group takes snakemake and its running jobs, like a lost node.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(proc, timeout=600):
    out = proc.communicate(timeout=timeout)[0]
    return proc.returncode, out


class Study:
    """The reduced study's config, with a pixmix.mixing.folder that tries to run shell commands
    (the folder is not used without PixMix, but the value reaches the report job's command line)."""

    def __init__(self, root):
        self.root = root
        self.markers = [root / f"injected-{i}" for i in range(3)]
        self.folder_value = (f"x'; touch {self.markers[0]}; echo '$(touch {self.markers[1]})"
                             f"`touch {self.markers[2]}`")
        self.config = write_study_config(root / "cfg", pixmix={"mixing": {"folder": self.folder_value}})
        self.procs = {}
        self.results = {}

    def start(self, name):
        self.procs[name] = snakemake(self.root / name, self.config)
        return self.procs[name]

    def wait(self, name):
        if name not in self.results:
            self.results[name] = finish(self.procs[name])
        return self.results[name]

    def close(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    s = Study(tmp_path_factory.mktemp("study"))
    s.start("first")
    yield s
    s.close()


def wait_for(path, proc, what, timeout=600):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended before {what}:\n{proc.communicate()[0]}")
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def test_killed_run_refuses_a_second_run_then_resumes_after_unlock(study):
    run = study.root / "killed"
    proc = study.start("killed")
    wait_for(run / "results/data/digits.npz", proc, "the first data set")
    rival = snakemake(run, study.config)  # a second run on the same folder while the first works
    try:
        wait_for(run / CHECKPOINT, proc, "a training checkpoint")
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the training job, mid-run
        proc.wait()
        rival_code, rival_out = finish(rival)
    finally:
        if rival.poll() is None:
            os.killpg(rival.pid, signal.SIGKILL)
    # Snakemake's message, shown as is: names the folder and, for a lock left by a kill, --unlock.
    assert rival_code != 0 and LOCK_MESSAGE in rival_out and "--unlock" in rival_out, rival_out
    assert str(run) in rival_out
    assert not (run / MODEL).exists()
    assert (run / CHECKPOINT).exists()
    assert files_under(run / ".snakemake/locks") != []  # the dead run's lock stays until --unlock

    assert finish(snakemake(run, study.config, "--unlock"))[0] == 0
    code, out = finish(snakemake(run, study.config))  # rerun-incomplete comes from the profile
    assert code == 0, out
    assert "resuming from" in (run / "results/logs/train/saltpepper/oe/seed1.log").read_text()
    assert not (run / CHECKPOINT).exists()


def test_same_config_and_seed_twice_gives_identical_logits_and_tables(study):
    first, killed = study.root / "first", study.root / "killed"
    code, out = study.wait("first")
    assert code == 0, out
    assert (killed / "results/report.html").exists(), "the killed run was not completed"
    assert_same_logits(first, killed)
    assert_same_tables(first, killed)
    assert_same_arrays(model_state(first / MODEL), model_state(killed / MODEL), "model weights")
    # every table the study makes was compared above (assert_same_tables reads them all)
    assert {"accuracy.csv", "detection.csv", "calibration.csv", "robustness.csv"} <= set(files_under(first / "results/tables"))


def test_config_strings_never_reach_a_shell_unquoted(study):
    code, out = study.wait("first")
    assert code == 0, out
    # The value went through the report job's command line intact...
    page = html.unescape((study.root / "first/results/report.html").read_text())
    assert study.folder_value in page
    # ...and ran nothing.
    assert [m for m in study.markers if m.exists()] == []
    assert [p for p in Path(study.root).rglob("injected-*")] == []


def test_read_only_results_folder_stops_at_the_first_job_with_snakemakes_message(tmp_path):
    run = tmp_path / "run"
    config = write_study_config(tmp_path / "cfg")
    with read_only_folder(run / "results"):
        code, out = finish(snakemake(run, config))
        assert files_under(run / "results") == []
    assert code != 0
    assert "Failed to create output directory results/" in out and "PermissionError" in out, out
