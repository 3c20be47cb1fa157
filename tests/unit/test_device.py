"""Device choice: CUDA when torch sees one, else the CPU with one warning; the train log names it.
Threads: the job's threads go to torch, logged against the cores the job may use."""
import csv
import logging

import pytest
import torch

from lib.common import device_name, pick_device, use_threads
from lib.config import validate_config
from lib.data.registry import make_dataset
from lib.train.loop import train


def _warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING]


def test_auto_picks_cuda_when_torch_sees_a_gpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with caplog.at_level(logging.INFO, logger="mnist_safety"):
        assert pick_device("auto") == torch.device("cuda")
        assert pick_device("cuda") == torch.device("cuda")
    assert not _warnings(caplog)


def test_without_a_gpu_auto_falls_back_to_the_cpu_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with caplog.at_level(logging.INFO, logger="mnist_safety"):
        assert pick_device("auto") == torch.device("cpu")
    [warning] = _warnings(caplog)
    message = warning.getMessage()
    assert "no CUDA device found" in message and "\n" not in message
    # A SLURM job's GPU that torch cannot use shows up in the log as what it was given.
    assert "CUDA_VISIBLE_DEVICES=3" in message


def test_asking_for_the_cpu_never_warns_and_asking_for_a_missing_gpu_fails(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with caplog.at_level(logging.INFO, logger="mnist_safety"):
        assert pick_device("cpu") == torch.device("cpu")
    assert not _warnings(caplog)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="device 'cuda'.*CUDA_VISIBLE_DEVICES"):
        pick_device("cuda")


def test_device_name_is_the_gpu_model_on_cuda_and_says_cpu_otherwise(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert device_name(torch.device("cuda")) == "NVIDIA H200"
    assert device_name(torch.device("cpu")).startswith("CPU: ")


def test_train_log_names_the_device_on_every_row(tmp_path, caplog):
    digits = make_dataset("digits")
    data = {k: v[:200] if k.endswith("train") else v for k, v in digits.items()}
    cfg = validate_config({"train": {"model": "small_convnet", "epochs": 2, "batch_size": 64, "device": "cpu"}})
    out_log = tmp_path / "train_log.csv"
    with caplog.at_level(logging.INFO, logger="mnist_safety"):
        train(data, "none", "baseline", 1, cfg, str(tmp_path / "model.pt"), str(out_log), None)
    rows = list(csv.DictReader(out_log.open()))
    expected = device_name(torch.device("cpu"))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {row["device"] for row in rows} == {expected}
    assert any(f"device {expected}" in r.getMessage() for r in caplog.records)


def test_threads_go_to_torch_and_the_log_names_the_usable_cores(monkeypatch, caplog):
    before = torch.get_num_threads()
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    log = logging.getLogger("mnist_safety")
    try:
        with caplog.at_level(logging.INFO, logger="mnist_safety"):
            use_threads(2, log)
            assert torch.get_num_threads() == 2
            assert "threads 2 of 3 usable cores" in caplog.text and not _warnings(caplog)
            use_threads(4, log)
        [warning] = _warnings(caplog)
        assert "4 threads asked for" in warning.getMessage() and "only 3 cores" in warning.getMessage()
    finally:
        torch.set_num_threads(before)
