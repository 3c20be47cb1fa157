"""benchmarks/bench_models.py: every model trains on an IDX folder and gets its row (no timing)."""
import gzip

import numpy as np
import pytest

from benchmarks.bench_models import load_idx_folder, main
from benchmarks.data import jittered_digits
from lib.train.models import MODELS


def write_idx(path, array, compress):
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture()
def idx_folder(tmp_path):
    images, labels = jittered_digits(400, seed=0)
    for split, part, compress in (("train", slice(0, 320), True), ("t10k", slice(320, 400), False)):
        suffix = ".gz" if compress else ""
        write_idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}", images[part], compress)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", labels[part], compress)
    return tmp_path


def test_idx_folder_loads_gzipped_or_plain(idx_folder):
    data = load_idx_folder(str(idx_folder))
    assert data["x_train"].shape == (320, 28, 28) and data["x_test"].shape == (80, 28, 28)
    assert data["y_train"].dtype == np.int64 and data["y_test"].max() <= 9


def test_every_model_gets_flops_parameters_accuracy_and_speed(idx_folder, capsys):
    rows = main(["--data-dir", str(idx_folder), "--epochs", "1"])
    assert [r["model"] for r in rows] == list(MODELS)
    for r in rows:
        assert r["mflops"] > 0.5 and r["parameters"] > 10_000 and 0 <= r["test_accuracy"] <= 1
        assert r["train_images_per_s"] > 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("model") and len(printed) == 1 + len(MODELS)


def test_missing_files_name_the_folder_and_the_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*MNIST-format IDX"):
        load_idx_folder(str(tmp_path))
