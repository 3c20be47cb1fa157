"""Fault injection, training jobs: SIGKILL mid-epoch, a NaN loss, a read-only output folder,
a checkpoint of other settings, and model/checkpoint files whose pickle would run code.

Everything runs the real entry point, `python -m lib.train.loop` (as a subprocess where the
process must die, else through lib.train.loop.main), on the bundled digits on the CPU.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import lib.evaluate.forward
import lib.train.loop
from lib.common import save_npz_atomic
from lib.config import merge_configs, validate_config
from lib.data.registry import make_dataset
from lib.train.loop import NonFiniteLoss
from lib.train.models import UnsafeFileError, load_model_file
from tests.helpers.faults import assert_same_arrays, files_under, model_state, nan_loss_at_step, read_only_folder
from tests.helpers.workflow_runs import python_env

STUDY = {"seed": 0, "augment": ["saltpepper"], "oe": ["baseline"], "seeds": [1],
         "train": {"model": "small_convnet", "epochs": 2, "batch_size": 64, "device": "cpu"}}


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    save_npz_atomic(str(path), **make_dataset("digits"))
    return path


@pytest.fixture(scope="module")
def few_digits_npz(tmp_path_factory):
    """450 training images after the validation split: 7 batches of 64 per epoch."""
    path = tmp_path_factory.mktemp("data") / "few_digits.npz"
    arrays = make_dataset("digits")
    save_npz_atomic(str(path), x_train=arrays["x_train"][:500], y_train=arrays["y_train"][:500],
                    x_test=arrays["x_test"][:100], y_test=arrays["y_test"][:100])
    return path


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    # lib.train.loop.main takes its thread count from OMP_NUM_THREADS: one thread is faster on a
    # shared machine and gives the same sums on every run.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def train_argv(folder, data, **train_overrides):
    cfg = validate_config(merge_configs(STUDY, {"train": train_overrides}))
    return ["--data", str(data), "--augment", "saltpepper", "--oe", "baseline", "--seed", "1",
            "--config-json", json.dumps(cfg), "--out-model", str(folder / "models/model.pt"),
            "--out-log", str(folder / "models/train_log.csv"), "--checkpoint", str(folder / "checkpoints/run.pt"),
            "--log", str(folder / "train.log")]


def train_process(folder, data, **train_overrides):
    return subprocess.Popen([sys.executable, "-m", "lib.train.loop", *train_argv(folder, data, **train_overrides)],
                            env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoint_epoch(folder):
    return int(torch.load(folder / "checkpoints/run.pt", weights_only=True)["epoch"])


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_the_same_weights(digits_npz, tmp_path):
    reference, victim = tmp_path / "uninterrupted", tmp_path / "killed"
    ref_proc = train_process(reference, digits_npz, epochs=3)
    proc = train_process(victim, digits_npz, epochs=3)
    try:
        deadline = time.monotonic() + 240
        while not (victim / "checkpoints/run.pt").exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the first epoch is saved; the second is under way
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert checkpoint_epoch(victim) < 3
    assert not (victim / "models/model.pt").exists() and not (victim / "models/train_log.csv").exists()

    resumed = train_process(victim, digits_npz, epochs=3)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "resuming from" in (victim / "train.log").read_text()
    assert ref_proc.wait(timeout=300) == 0, ref_proc.communicate()[0]
    assert_same_arrays(model_state(reference / "models/model.pt"), model_state(victim / "models/model.pt"),
                       "weights after kill + resume vs uninterrupted")
    assert not (victim / "checkpoints/run.pt").exists()
    rows_ref = (reference / "models/train_log.csv").read_text().splitlines()
    rows_res = (victim / "models/train_log.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in rows_ref] == [r.split(",")[:3] for r in rows_res]  # epoch, loss, accuracy


def test_nan_loss_names_epoch_and_batch_and_writes_no_model(few_digits_npz, tmp_path):
    argv = train_argv(tmp_path, few_digits_npz)
    with nan_loss_at_step(9), pytest.raises(NonFiniteLoss) as err:  # 7 batches per epoch: epoch 2, batch 3
        lib.train.loop.main(argv)
    message = str(err.value)
    assert "loss is nan at epoch 2, batch 3" in message and "saltpepper/baseline/seed1" in message
    assert "lower train.lr" in message
    assert files_under(tmp_path / "models") == []
    assert checkpoint_epoch(tmp_path) == 1  # the last good epoch survives

    lib.train.loop.main(argv)
    assert "resuming from" in (tmp_path / "train.log").read_text()
    assert files_under(tmp_path / "models") == ["model.pt", "train_log.csv"]


def test_checkpoint_of_other_settings_is_not_resumed(few_digits_npz, tmp_path):
    with nan_loss_at_step(9), pytest.raises(NonFiniteLoss):
        lib.train.loop.main(train_argv(tmp_path, few_digits_npz))
    assert checkpoint_epoch(tmp_path) == 1
    lib.train.loop.main(train_argv(tmp_path, few_digits_npz, lr=0.01))
    log = (tmp_path / "train.log").read_text()
    assert "ignoring checkpoint" in log and "resuming from" not in log
    assert [r.split(",")[0] for r in (tmp_path / "models/train_log.csv").read_text().splitlines()] == \
        ["epoch", "1", "2"]


def test_read_only_output_folder_is_a_clear_error_and_the_work_survives(few_digits_npz, tmp_path):
    argv = train_argv(tmp_path, few_digits_npz, epochs=1)
    models = tmp_path / "models"
    with read_only_folder(models):
        with pytest.raises(PermissionError) as err:
            lib.train.loop.main(argv)
        assert files_under(models) == []
    message = str(err.value)
    assert "cannot write" in message and str(models) in message and "Make the folder writable" in message
    assert ".tmp-" not in message
    assert checkpoint_epoch(tmp_path) == 1  # the training is kept...
    lib.train.loop.main(argv)                    # ...so the rerun only writes the files
    assert "all 1 epochs done" in (tmp_path / "train.log").read_text()
    assert files_under(models) == ["model.pt", "train_log.csv"]


class RunsCode:
    """Pickles to a call of os.system: what a booby-trapped model file holds."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_model_and_checkpoint_files_that_would_run_code_are_refused(few_digits_npz, tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "model.pt"
    torch.save({"state_dict": RunsCode(f"touch {marker}"), "model_name": "small_convnet", "num_classes": 10}, evil)
    with pytest.raises(UnsafeFileError) as err:
        load_model_file(evil)
    assert str(evil) in str(err.value) and "refusing to load" in str(err.value)
    assert "weights_only=False" not in str(err.value)
    with pytest.raises(UnsafeFileError):  # the evaluate job's entry point
        lib.evaluate.forward.main(["--model", str(evil), "--id-data", str(few_digits_npz), "--config-json",
                           json.dumps(validate_config(STUDY)), "--out-dir", str(tmp_path / "logits")])
    assert files_under(tmp_path / "logits") == []

    argv = train_argv(tmp_path, few_digits_npz, epochs=1)
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": RunsCode(f"touch {marker}"), "epoch": 1}, tmp_path / "checkpoints/run.pt")
    with pytest.raises(UnsafeFileError, match="run.pt: refusing to load"):
        lib.train.loop.main(argv)
    assert not marker.exists()
    assert files_under(tmp_path / "models") == []

    # The file really is armed: an unsafe load runs its code.
    torch.load(evil, weights_only=False)
    assert marker.exists()
