"""The benchmark helpers keep their contracts, and `make bench` passes its flags on
(tests/workflow/test_make_bench.py runs it end to end at tiny size).

No test here times anything.
"""
import subprocess

import numpy as np
import pytest

from benchmarks.bench_workflow import grid_config
from benchmarks.data import auxiliary_images, jittered_digits
from benchmarks.run import COLUMNS, format_table
from lib.config import load_schema, validate_config
from tests.helpers import ROOT


def test_jittered_digits_are_mnist_sized_labelled_and_reproducible():
    images, labels = jittered_digits(300, seed=3)
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (300,) and set(np.unique(labels)) <= set(range(10)) and len(np.unique(labels)) == 10
    again, _ = jittered_digits(300, seed=3)
    other, _ = jittered_digits(300, seed=4)
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    assert images[:, :2].mean() < 5 and images.max() > 200  # ink on a black frame
    assert len({picture.tobytes() for picture in images}) == 300  # the jitter makes every copy distinct
    aux = auxiliary_images(images, 50, seed=1)
    assert aux.shape == (50, 28, 28) and aux.dtype == np.uint8


def test_grid_config_validates_and_uses_every_allowed_augmentation():
    cfg = grid_config(seeds=10)
    validate_config(cfg)
    allowed = load_schema()["properties"]["augment"]["items"]["enum"]
    assert cfg["augment"] == [a for a in ("none", "saltpepper", "pixmix") if a in allowed]
    assert cfg["seeds"] == list(range(1, 11)) and len(cfg["ood_sets"]) == 10 and len(cfg["scores"]) == 6


def test_table_has_one_row_per_line_and_names_the_machine():
    lines = [{"name": "a", "ours": 1234.5, "reference": 10.0, "unit": "img/s", "ratio": 123.45, "goal": ">= 20",
              "met": True, "detail": "batch 4"},
             {"name": "b", "ours": 3.0, "reference": 15.0, "unit": "s", "ratio": 5.0, "goal": "<= 15 s",
              "met": False, "detail": "x"}]
    about = {"cpu": "CPU: test", "cores": 2, "gpu": None, "torch": "t", "malloc": {"MALLOC_TOP_PAD_": None},
             "load_before": "1.0", "load_after": "2.0", "date": "today"}
    text = format_table(lines, about).splitlines()
    assert text[0].split(" | ")[0].strip() == "benchmark" and set(text[1]) <= {"-", "+"}
    assert "1,234" in text[2] and "123.45" in text[2] and text[2].rstrip().endswith("yes")
    assert text[3].rstrip().endswith("NO")
    assert "MALLOC_* not set" in text[-1] and "load average 1.0" in text[-1]


@pytest.mark.parametrize("flag, expected", [("BENCH_DEMO=1", "--demo"), ("BENCH_MALLOC=off", None)])
def test_make_bench_flags(flag, expected):
    command = subprocess.run(["make", "-n", "bench", flag], cwd=ROOT, capture_output=True, text=True).stdout
    run_line = [line for line in command.splitlines() if "benchmarks.run" in line][0]
    if expected:
        assert expected in run_line and "MALLOC_TOP_PAD_=536870912" in run_line
    else:
        assert "MALLOC" not in run_line


@pytest.mark.parametrize("gpu_epoch_s", [None, 2.0])
def test_pixmix_lines_add_the_gpu_epoch_only_with_a_gpu(monkeypatch, gpu_epoch_s):
    import torch

    from benchmarks import bench_pixmix, run
    rates = {"reference": [100.0], "batched": [3000.0], "one_thread": [1500.0]}
    result = {"threads": 2, "batch_size": 8192, "reference_images_per_s": 100.0, "batched_images_per_s": 3000.0,
              "ratio": 30.0, "ratio_median": 30.0, "batched_one_thread_images_per_s": 1500.0,
              "ratio_one_thread": 15.0, "ratio_one_thread_median": 15.0, "repeat_images_per_s": rates,
              "gpu_epoch_s": gpu_epoch_s}
    monkeypatch.setattr(bench_pixmix, "bench_pixmix", lambda **sizes: result)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Some GPU")
    lines = run.pixmix_lines(tiny=True)
    assert [line["met"] for line in lines[:2]] == [True, None]
    if gpu_epoch_s is None:
        assert len(lines) == 2
        return
    gpu = lines[2]
    assert len(lines) == 3 and gpu["unit"] == "s" and gpu["ours"] == 2.0
    # the CPU reference is the same 60,000 images at the CPU's batched speed: 20 s
    assert gpu["reference"] == 60_000 / 3000.0 and gpu["ratio"] == 10.0 and gpu["met"] is None
    assert "Some GPU" in gpu["detail"] and set(COLUMNS) <= set(gpu)
