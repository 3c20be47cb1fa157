"""Fault injection at what a job is given, function by function: `--config` values as typed
on the command line, a config its data cannot serve, checksum records of refused files,
and model files (damaged, and byte-identical when rebuilt). The same faults through the
real workflow: tests/workflow/test_faults_cached.py.
"""
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import lib.common
import lib.data.real
from lib.config import ConfigError, merge_configs, parse_command_line_config, validate_config
from lib.data.download import ChecksumError, CorruptFileError
from lib.data.registry import TRAIN_IMAGES, config_problems_with_data, make_dataset
from lib.data.splits import validation_split
from lib.train.loop import train
from lib.train.models import DamagedFileError, load_model_file, save_torch_atomic
from tests.helpers.fake_data import build_idx
from tests.helpers import ROOT

TINY = yaml.safe_load((Path(ROOT) / "presets/tiny.yaml").read_text())


# ---- --config on the command line -------------------------------------------------------

def test_command_line_values_are_read_as_yaml_at_any_depth():
    # What Snakemake hands over as text: `true`, list items, values of a nested mapping.
    parsed = parse_command_line_config(["seeds=[1, 2]", "offline=true", "ood_sets=[gaussian]",
                                        "train={epochs: 2, lr: 1e-3, nesterov: false}", "data_dir=~/data",
                                        "outlier_exposure={source: jigsaw, size: 300}"])
    assert parsed == {"seeds": [1, 2], "offline": True, "ood_sets": ["gaussian"],
                      "train": {"epochs": 2, "lr": 0.001, "nesterov": False}, "data_dir": "~/data",
                      "outlier_exposure": {"source": "jigsaw", "size": 300}}
    cfg = validate_config(merge_configs(TINY, parsed))
    assert cfg["seeds"] == [1, 2] and cfg["train"]["epochs"] == 2 and cfg["train"]["model"] == "small_convnet"


def test_quoted_command_line_values_stay_text_and_an_empty_one_is_null():
    assert parse_command_line_config(["data_dir='123'", "pixmix={mixing: {folder: ''}}", "x="]) == \
        {"data_dir": "123", "pixmix": {"mixing": {"folder": ""}}, "x": None}


def test_command_line_value_that_is_not_yaml_names_the_entry_and_the_fix():
    with pytest.raises(ConfigError) as err:
        parse_command_line_config(["seeds=[1, 2"])
    assert "--config seeds=[1, 2: the value is not valid YAML" in str(err.value)
    assert "quote the whole entry" in str(err.value)


# ---- the config against its data --------------------------------------------------------

def test_training_split_sizes_are_those_of_the_data():
    assert len(make_dataset("digits")["x_train"]) == TRAIN_IMAGES["digits"]
    train_idx, _ = validation_split(TRAIN_IMAGES["digits"], 0, 0.1)
    biggest = validate_config(merge_configs(TINY, {"train": {"batch_size": len(train_idx)}}))
    assert config_problems_with_data(biggest) == []


def test_batch_larger_than_the_training_split_is_refused_naming_the_key():
    cfg = validate_config(merge_configs(TINY, {"train": {"batch_size": 5000}}))
    [problem] = config_problems_with_data(cfg)
    assert problem.startswith("config key 'train.batch_size': 5000 is larger than the training split of 'digits'")
    assert "use at most 1293" in problem


def test_the_train_job_names_the_key_for_a_batch_larger_than_its_data(tmp_path):
    arrays = make_dataset("digits")
    data = {k: v[:40] for k, v in arrays.items()}
    cfg = validate_config(merge_configs(TINY, {"train": {"device": "cpu"}}))  # batch 64 > 36 images
    with pytest.raises(ValueError, match="config key 'train.batch_size': 64 is larger than the training split"):
        train(data, "none", "baseline", 1, cfg, str(tmp_path / "model.pt"), str(tmp_path / "log.csv"), None)
    assert list(tmp_path.iterdir()) == []


def test_missing_cuda_names_the_key_and_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    problem = lib.common.missing_cuda()
    assert problem.startswith("config key 'train.device': device 'cuda' is asked for")
    assert "set train.device: auto" in problem
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert lib.common.missing_cuda() is None


# ---- checksum records of refused files ------------------------------------------------

IDX_FILES, _ = build_idx(np.random.default_rng(31))
OTHER_LABELS = build_idx(np.random.default_rng(32))[0]["t10k-labels-idx1-ubyte.gz"]  # a label file in place of images


def stage_plain(data_dir, files):
    """Uncompressed IDX files, as torchvision leaves them (recorded under their own path)."""
    for name, body in files.items():
        path = data_dir / "MNIST/raw" / name.removesuffix(".gz")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.decompress(body))


def test_refused_plain_copy_leaves_no_record_so_the_good_copy_is_accepted(tmp_path):
    # MNIST's files have a published md5 (of the .gz); a staged uncompressed copy has none and
    # is recorded on first use under its own path. A copy the reader refuses must not stay the
    # reference the good copy is then held to.
    images = "t10k-images-idx3-ubyte.gz"
    stage_plain(tmp_path, {**IDX_FILES, images: OTHER_LABELS})
    with pytest.raises(CorruptFileError, match="wrong IDX magic number"):
        lib.data.real.load_real_dataset("mnist", tmp_path)
    bad_sha = hashlib.sha256(gzip.decompress(OTHER_LABELS)).hexdigest()
    recorded = json.loads((tmp_path / "CHECKSUMS.json").read_text())
    assert bad_sha not in {entry["sha256"] for entry in recorded.values()}
    assert len(recorded) == 3  # the three good files keep their records

    stage_plain(tmp_path, {images: IDX_FILES[images]})
    arrays = lib.data.real.load_real_dataset("mnist", tmp_path)
    assert arrays["x_test"].shape == (5, 28, 28)


def test_a_recorded_hash_is_never_called_expected(tmp_path):
    stage_plain(tmp_path, IDX_FILES)
    lib.data.real.load_real_dataset("mnist", tmp_path)  # records the four sha256s
    recorded = json.loads((tmp_path / "CHECKSUMS.json").read_text())
    stage_plain(tmp_path, {"t10k-images-idx3-ubyte.gz": IDX_FILES["train-images-idx3-ubyte.gz"]})
    with pytest.raises(ChecksumError) as err:
        lib.data.real.load_real_dataset("mnist", tmp_path)
    message = str(err.value)
    old = next(v["sha256"] for k, v in recorded.items() if k.endswith("t10k-images-idx3-ubyte"))
    assert f"expected {old}" not in message and f"sha256 {old}" not in message.split("first used here had")[0]
    assert "the copy first used here had sha256 " + old in message and "no checksum is published" in message
    assert "remove the entry" in message


def test_every_mismatching_staged_file_is_named_with_the_data_sources_override(tmp_path):
    # One's own MNIST copy, re-compressed: all four .gz files miss the published md5s.
    for name, body in IDX_FILES.items():
        path = tmp_path / "MNIST/raw" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    with pytest.raises(ChecksumError) as err:
        lib.data.real.fetch_dataset("mnist", tmp_path, offline=True)
    message = str(err.value)
    assert message.startswith("4 of 4 file(s) of data set 'mnist' do not match their checksums")
    for name, body in IDX_FILES.items():
        assert str(tmp_path / "MNIST/raw" / name) in message
        assert f"{name}: {hashlib.md5(body).hexdigest()}" in message  # the pin to paste
    assert "data_sources: {mnist: {md5: {" in message and "unpin them with null" in message


# ---- model files ------------------------------------------------------------------------

def test_identical_models_are_byte_identical_files_whatever_the_temporary_name(tmp_path):
    torch.manual_seed(0)
    state = {"state_dict": torch.nn.Linear(3, 2).state_dict(), "model_name": "x"}
    save_torch_atomic(str(tmp_path / "a" / "model.pt"), state)
    save_torch_atomic(str(tmp_path / "b" / "model.pt"), state)
    assert (tmp_path / "a/model.pt").read_bytes() == (tmp_path / "b/model.pt").read_bytes()


@pytest.mark.parametrize("damage", ["random_bytes", "truncated"])
def test_damaged_model_file_is_reported_as_damaged_not_as_pickled_code(damage, tmp_path):
    path = tmp_path / "model.pt"
    save_torch_atomic(str(path), {"state_dict": torch.nn.Linear(3, 2).state_dict()})
    good = path.read_bytes()
    path.write_bytes(os.urandom(len(good)) if damage == "random_bytes" else good[: len(good) // 2])
    with pytest.raises(DamagedFileError) as err:
        load_model_file(str(path))
    assert str(err.value).startswith(f"{path}: damaged or truncated")
    assert "Delete it and rerun the same command" in str(err.value) and "pickled" not in str(err.value)


# ---- the checked loader of cached arrays ------------------------------------------------

LOGITS = {"logits": np.zeros((4, 3), np.float32), "labels": np.array([0, 1, 2, -1]),
          "features": np.ones((4, 5), np.float32)}
DIGITS = {"x_test": np.zeros((4, 28, 28), np.uint8), "y_test": np.arange(4)}


@pytest.mark.parametrize("arrays, required, words", [
    ({**LOGITS, "features": np.array([[1.0, 2.0]] * 3 + [[1.0, np.nan]])}, (), "'features' holds 1 non-finite value(s) (NaN; first in row 3)"),
    ({**LOGITS, "logits": np.full((4, 3), -np.inf, np.float32)}, (), "'logits' holds 12 non-finite value(s) (inf"),
    ({**DIGITS, "x_test": np.zeros((4, 28, 28))}, (), "'x_test' is float64 [4, 28, 28], expected uint8 [N, 28, 28]"),
    ({**DIGITS, "x_test": np.zeros((4, 32, 32), np.uint8)}, (), "expected uint8 [N, 28, 28] (images)"),
    ({"x_test": np.zeros((0, 28, 28), np.uint8), "y_test": np.zeros(0, np.int64)}, (), "'x_test' is empty"),
    ({**DIGITS, "y_test": np.arange(3)}, (), "lengths differ: 'x_test' 4, 'y_test' 3"),
    ({**LOGITS, "labels": np.array([0, 1, 3, 0])}, (), "'labels' holds class 3 but 'logits' has 3 classes"),
    ({**LOGITS, "labels": np.array([0, 1, -2, 0])}, (), "'labels' holds -2"),
    ({"logits": LOGITS["logits"], "labels": LOGITS["labels"]}, ("logits", "features"),
     "no array 'features' (it holds 'logits', 'labels')"),
])
def test_cached_array_problems_name_the_file_the_array_and_the_fix(arrays, required, words, tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, **arrays)
    with pytest.raises(lib.common.CachedFileError) as err:
        lib.common.load_npz(str(path), required=required)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and words in message, message
    assert message.endswith("Delete it and rerun the same snakemake command: it is written again, and "
                            "everything computed from it after it (docs/failure-modes.md).")


def test_good_cached_arrays_load_unchanged(tmp_path):
    np.savez(tmp_path / "ok.npz", **LOGITS, **DIGITS, source=np.array("fractals"))
    arrays = lib.common.load_npz(str(tmp_path / "ok.npz"), required=("logits", "x_test"))
    assert sorted(arrays) == sorted([*LOGITS, *DIGITS, "source"])
    np.testing.assert_array_equal(arrays["features"], LOGITS["features"])


@pytest.mark.parametrize("damage", ["missing", "truncated", "not_a_zip"])
def test_missing_or_damaged_cached_file_is_named_with_the_fix(damage, tmp_path):
    path = tmp_path / "set.npz"
    if damage != "missing":
        np.savez(path, **DIGITS)
        path.write_bytes(path.read_bytes()[:200] if damage == "truncated" else b"not a zip file")
    with pytest.raises(lib.common.CachedFileError) as err:
        lib.common.load_npz(str(path))
    if damage == "missing":
        assert isinstance(err.value, FileNotFoundError)
        assert str(err.value).startswith(f"{path} is missing. Rerun the same snakemake command")
    else:
        assert str(err.value).startswith(f"{path} is damaged or truncated (") and "Delete it" in str(err.value)


def test_the_evaluate_job_refuses_to_write_non_finite_logits(tmp_path):
    import logging
    from lib.evaluate.forward import evaluate
    from lib.train.models import build_model
    model = build_model("small_convnet", 10)
    with torch.no_grad():
        model.head.bias[3] = float("nan")
    save_torch_atomic(str(tmp_path / "model.pt"), {"state_dict": model.state_dict(), "model_name": "small_convnet",
                                                   "num_classes": 10})
    cfg = validate_config(merge_configs(TINY, {"train": {"device": "cpu"}}))
    digits = make_dataset("digits")
    id_data = {k: v[:300] for k, v in digits.items()}
    out = tmp_path / "logits"
    with pytest.raises(ValueError, match=r"model.pt on id_test: 'logits' holds 300 non-finite value\(s\) \(NaN"):
        evaluate(str(tmp_path / "model.pt"), id_data, cfg, [], str(out), logging.getLogger("test"))
    assert [p.name for p in out.iterdir()] == ["mahalanobis_stats.npz"]
