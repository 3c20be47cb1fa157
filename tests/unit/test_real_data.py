"""lib.data.real end to end against a local HTTP server fed with small files in the real formats."""
import gzip
import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lib.data.download import ChecksumError, CorruptFileError, DownloadError, MissingDataError
from lib.data.readers import load_cifar_batch, mnist_frame, white_on_black
from lib.data.real import (REAL_DATASETS, dataset_spec, expected_files, fetch_dataset,
                           load_real_dataset, main)
from tests.helpers.fake_data import (BUILDERS, build_cifar, build_idx, build_tiny, cifar_batch_bytes,
                                     dark_on_light, idx_bytes, md5, mnist_like, npy_bytes, serve)

RNG_SEED = 7


def test_every_registry_entry_has_a_builder_and_a_licence_line():
    assert set(BUILDERS) == set(REAL_DATASETS)
    for spec in REAL_DATASETS.values():
        assert spec["licence"] and spec["citation"] and spec["splits"]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fetch_and_convert_each_format(http_server, tmp_path, name):
    files, expect = BUILDERS[name](np.random.default_rng(RNG_SEED))
    sources = serve(http_server, name, files)
    paths = fetch_dataset(name, tmp_path, sources=sources, wait_s=0, progress=False)
    assert sorted(paths.values()) == sorted(p for p, _ in expected_files(name, tmp_path, sources))
    assert all(http_server.hits[f"{name}/{f}"] == 1 for f in files)

    arrays = load_real_dataset(name, tmp_path, sources)
    splits = REAL_DATASETS[name]["splits"]
    assert sorted(arrays) == sorted([f"x_{s}" for s in splits] + [f"y_{s}" for s in splits])
    for split in splits:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        assert x.dtype == np.uint8 and x.shape[1:] == (28, 28) and len(x) == len(y)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, expect[f"y_{split}"])
        if f"x_{split}" in expect:
            np.testing.assert_array_equal(x, expect[f"x_{split}"])
        else:
            # Every source image here is dark ink on light paper: converted, it must be
            # mostly dark like MNIST, with the ink bright.
            assert x.mean() < 128
            assert (x.reshape(len(x), -1).max(axis=1) > 200).all()
    # A second fetch finds everything in place and downloads nothing.
    fetch_dataset(name, tmp_path, sources=sources, offline=True)
    assert all(http_server.hits[f"{name}/{f}"] == 1 for f in files)


def test_default_urls_and_md5s_come_from_torchvision_classes(tmp_path):
    from torchvision import datasets as tv
    spec = dataset_spec("kmnist")
    for filename, md5sum in tv.KMNIST.resources:
        res = next(r for r in spec["files"].values() if r["path"].endswith(filename))
        assert res["md5"] == md5sum and res["urls"] == [m + filename for m in tv.KMNIST.mirrors]
    assert [p for p, _ in expected_files("mnist", tmp_path)][0] == tmp_path / "MNIST/raw/train-images-idx3-ubyte.gz"
    assert dataset_spec("omniglot")["files"]["zip"]["md5"] == tv.Omniglot.zips_md5["images_evaluation"]
    assert dataset_spec("cifar10_gray")["files"]["archive"]["md5"] == tv.CIFAR10.tgz_md5


def test_offline_with_missing_files_lists_what_to_stage_and_never_downloads(http_server, tmp_path):
    files, _ = build_idx(np.random.default_rng(0))
    sources = serve(http_server, "kmnist", files)
    (tmp_path / "KMNIST/raw").mkdir(parents=True)
    (tmp_path / "KMNIST/raw/t10k-labels-idx1-ubyte.gz").write_bytes(files["t10k-labels-idx1-ubyte.gz"])
    with pytest.raises(MissingDataError) as err:
        fetch_dataset("kmnist", tmp_path, offline=True, sources=sources)
    msg = str(err.value)
    assert sum(http_server.hits.values()) == 0
    assert "3 of 4 file(s)" in msg
    for filename in files:
        assert str(tmp_path / "KMNIST/raw" / filename) in msg
        assert http_server.url(f"kmnist/{filename}") in msg
        assert md5(files[filename]) in msg
    assert "[present]" in msg and msg.count("[MISSING]") == 3


def test_checksum_mismatch_fails_and_leaves_nothing(http_server, tmp_path):
    files, _ = build_cifar(np.random.default_rng(0))
    sources = serve(http_server, "cifar10_gray", files)
    sources["cifar10_gray"]["md5"]["cifar-10-python.tar.gz"] = "f" * 32
    with pytest.raises(DownloadError) as err:
        fetch_dataset("cifar10_gray", tmp_path, sources=sources, retries=1, wait_s=0, progress=False)
    assert "f" * 32 in str(err.value) and "cifar-10-python.tar.gz" in str(err.value)
    assert http_server.hits["cifar10_gray/cifar-10-python.tar.gz"] == 2
    assert list(tmp_path.rglob("*")) == []


def test_truncated_download_is_retried_then_reported(http_server, tmp_path):
    files, _ = build_tiny(np.random.default_rng(0))
    sources = serve(http_server, "tiny300k", files)
    sources["tiny300k"]["md5"] = {}  # no published checksum: the sha256 gets recorded
    http_server.truncate["tiny300k/300K_random_images.npy"] = -1
    with pytest.raises(DownloadError, match="truncated"):
        fetch_dataset("tiny300k", tmp_path, sources=sources, retries=2, wait_s=0, progress=False)
    assert http_server.hits["tiny300k/300K_random_images.npy"] == 3
    assert list(tmp_path.rglob("*")) == []

    http_server.truncate["tiny300k/300K_random_images.npy"] = 1
    fetch_dataset("tiny300k", tmp_path, sources=sources, retries=2, wait_s=0, progress=False)
    recorded = json.loads((tmp_path / "CHECKSUMS.json").read_text())
    assert recorded["300K_random_images.npy"]["sha256"] == hashlib.sha256(files["300K_random_images.npy"]).hexdigest()


def test_system_fashion_mnist_is_used_instead_of_downloading(http_server, tmp_path):
    files, expect = build_idx(np.random.default_rng(1))
    system = tmp_path / "system"
    system.mkdir()
    plain = {}
    for filename, body in files.items():
        # Like Debian's package: same content, re-compressed with another gzip header.
        content = gzip.decompress(body)
        (system / filename).write_bytes(gzip.compress(content, mtime=1591347949))
        plain[filename] = md5(content)
    data_dir = tmp_path / "data"
    sources = serve(http_server, "fashion_mnist", files)
    sources["fashion_mnist"].update(system_dir=str(system), plain_md5=plain)
    paths = fetch_dataset("fashion_mnist", data_dir, offline=True, sources=sources)
    assert all(p.parent == system for p in paths.values())
    arrays = load_real_dataset("fashion_mnist", data_dir, sources)
    np.testing.assert_array_equal(arrays["x_train"], expect["x_train"])
    assert sum(http_server.hits.values()) == 0 and not data_dir.exists()

    (system / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x03" + bytes(12)))
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte.gz: decompressed content has md5"):
        fetch_dataset("fashion_mnist", data_dir, offline=True, sources=sources)


def test_registry_points_at_debians_fashion_mnist_folder():
    assert REAL_DATASETS["fashion_mnist"]["system_dir"] == "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_installed_debian_fashion_mnist_verifies_and_loads(tmp_path):
    arrays = load_real_dataset("fashion_mnist", tmp_path, count=100)
    assert arrays["x_train"].shape == (100, 28, 28) and arrays["x_test"].shape == (100, 28, 28)


def test_extracted_cifar_batch_in_torchvision_layout_is_accepted(tmp_path):
    rgb = np.repeat(dark_on_light(4, 32, np.random.default_rng(2))[..., None], 3, axis=3)
    body = cifar_batch_bytes(rgb, [3, 1, 4, 1])
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py/test_batch").write_bytes(body)
    sources = {"cifar10_gray": {"plain_md5": {"cifar-10-python.tar.gz": md5(body)}}}
    arrays = load_real_dataset("cifar10_gray", tmp_path, sources)
    assert arrays["y_test"].tolist() == [3, 1, 4, 1] and arrays["x_test"].shape == (4, 28, 28)


def stage(tmp_path, relpath, body):
    path = tmp_path / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def test_corrupt_files_raise_errors_naming_file_and_fix(tmp_path):
    files, _ = build_idx(np.random.default_rng(3))
    unpinned = {"mnist": {"md5": {f: None for f in files}}}  # no pins: exercise the parsers
    for f, body in files.items():
        stage(tmp_path, f"MNIST/raw/{f}", body)
    bad_gzip = stage(tmp_path, "MNIST/raw/t10k-images-idx3-ubyte.gz", files["t10k-images-idx3-ubyte.gz"][:-40])
    with pytest.raises(CorruptFileError) as err:
        load_real_dataset("mnist", tmp_path, unpinned)
    assert str(bad_gzip) in str(err.value) and "gz" in str(err.value) and "Delete it" in str(err.value)

    (tmp_path / "CHECKSUMS.json").unlink()
    stage(tmp_path, "MNIST/raw/t10k-images-idx3-ubyte.gz", files["t10k-labels-idx1-ubyte.gz"])
    with pytest.raises(CorruptFileError, match="t10k-images-idx3-ubyte.gz: wrong IDX magic number 0x00000801"):
        load_real_dataset("mnist", tmp_path, unpinned)

    rgb = np.zeros((20, 32, 32, 3), dtype=np.uint8)
    npy = stage(tmp_path, "300K_random_images.npy", npy_bytes(rgb)[:-500])
    with pytest.raises(CorruptFileError) as err:
        load_real_dataset("tiny300k", tmp_path)
    assert str(npy) in str(err.value) and "truncated" in str(err.value)

    bad_zip = b"PK\x03\x04 not really a zip"
    stage(tmp_path, "omniglot-py/images_evaluation.zip", bad_zip)
    with pytest.raises(CorruptFileError, match="images_evaluation.zip: truncated or damaged zip file"):
        load_real_dataset("omniglot", tmp_path, {"omniglot": {"md5": {"images_evaluation.zip": None}}})
    with pytest.raises(CorruptFileError, match="images_evaluation.zip: not a readable zip"):
        load_real_dataset("omniglot", tmp_path, {"omniglot": {"md5": {"images_evaluation.zip": md5(bad_zip)}}})


def test_staged_file_with_wrong_checksum_is_refused(tmp_path):
    files, _ = build_idx(np.random.default_rng(4))
    for f, body in files.items():
        stage(tmp_path, f"MNIST/raw/{f}", body)
    with pytest.raises(ChecksumError) as err:
        load_real_dataset("mnist", tmp_path)  # the real published md5s
    msg = str(err.value)
    assert "MNIST/raw/" in msg and "expected" in msg and "ossci-datasets" in msg


def test_cifar_pickle_may_not_call_arbitrary_functions():
    evil = pickle.dumps({"data": os.getcwd, "labels": []}, protocol=2)
    with pytest.raises(CorruptFileError, match="refusing to load"):
        load_cifar_batch(evil, "test_batch")


def test_prepare_cli_writes_npz_and_leaves_nothing_on_error(http_server, tmp_path, capsys):
    files, expect = build_idx(np.random.default_rng(5))
    sources_file = tmp_path / "sources.json"
    sources_file.write_text(json.dumps(serve(http_server, "mnist", files)))
    data_dir, out = tmp_path / "data", tmp_path / "results/data/mnist.npz"
    record = tmp_path / "results/data/fetched/mnist.json"

    assert main(["prepare", "mnist", "--data-dir", str(data_dir), "--out", str(out),
                 "--sources-json", str(sources_file)]) == 1
    assert "offline mode" in capsys.readouterr().err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []

    assert main(["fetch", "mnist", "--data-dir", str(data_dir), "--offline",
                 "--sources-json", str(sources_file)]) == 1
    assert sum(http_server.hits.values()) == 0
    inline = sources_file.read_text()  # the rules may pass the mapping as JSON text
    assert main(["fetch", "mnist", "--data-dir", str(data_dir), "--sources-json", inline,
                 "--record", str(record)]) == 0
    assert sorted(json.loads(record.read_text())["files"]) == sorted(REAL_DATASETS["mnist"]["files"])
    assert main(["prepare", "mnist", "--data-dir", str(data_dir), "--out", str(out),
                 "--sources-json", str(sources_file), "--count", "3", "--seed", "1"]) == 0
    with np.load(out) as saved:
        assert saved["x_train"].shape == (3, 28, 28) and saved["x_test"].shape == (3, 28, 28)
        rows = [np.flatnonzero((expect["x_train"] == img).all(axis=(1, 2)))[0] for img in saved["x_train"]]
        np.testing.assert_array_equal(saved["y_train"], expect["y_train"][rows])
    assert sorted(p.name for p in out.parent.iterdir()) == ["fetched", "mnist.npz"]


def test_unknown_override_keys_and_polarity_are_rejected():
    with pytest.raises(ValueError, match="unknown key"):
        dataset_spec("mnist", {"mnist": {"mirror": "http://x/"}})
    with pytest.raises(ValueError, match="polarity"):
        dataset_spec("mnist", {"mnist": {"polarity": "negative"}})


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.sampled_from([28, 32, 105]), st.integers(0, 100), st.integers(150, 255),
       st.integers(0, 2**16))
def test_dark_on_light_becomes_white_on_black(n, size, ink, paper, seed):
    x = dark_on_light(n, size, np.random.default_rng(seed))
    x = np.where(x > 128, paper, ink).astype(np.uint8)
    for polarity in ("auto", "invert"):
        out = mnist_frame(x, polarity)
        assert out.shape == (n, 28, 28) and out.dtype == np.uint8
        assert out.mean() < 128
        # The ink is the brightest thing after conversion.
        assert (out.reshape(n, -1).max(axis=1) >= 255 - ink - 20).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**16))
def test_auto_polarity_keeps_white_on_black_images(seed):
    x = mnist_like(3, np.random.default_rng(seed))
    np.testing.assert_array_equal(white_on_black(x, "auto"), x)


def test_idx_parser_reports_bad_gzip_and_wrong_lengths():
    from lib.data.readers import parse_idx
    x = mnist_like(3, np.random.default_rng(0))
    np.testing.assert_array_equal(parse_idx(idx_bytes(x), "x.gz", 3), x)
    np.testing.assert_array_equal(parse_idx(idx_bytes(x, compress=False), "x", 3), x)
    with pytest.raises(CorruptFileError, match="x.gz: not a valid gzip file"):
        parse_idx(idx_bytes(x)[:-20], "x.gz", 3)
    with pytest.raises(CorruptFileError, match=r"announces shape \(3, 28, 28\)"):
        parse_idx(idx_bytes(x, compress=False)[:-5], "x", 3)
    with pytest.raises(CorruptFileError, match="wrong IDX magic number 0x00000803, expected 0x00000801"):
        parse_idx(idx_bytes(x), "y.gz", 1)
