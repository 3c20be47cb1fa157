"""The official MNIST-C path, end to end against a local server serving a mnist_c.zip (tests/helpers/fake_data.py)."""
import hashlib
import json

import numpy as np
import pytest

from lib.data.download import ChecksumError, CorruptFileError, DownloadError, MissingDataError
from lib.data.mnist_c import (CORRUPTIONS, MNIST_C_MD5, MNIST_C_URL, extract_mnist_c, fetch_mnist_c, main,
                         mnist_c_source)
from tests.helpers.fake_data import mnist_c_zip


@pytest.fixture(scope="module")
def official():
    return mnist_c_zip()


def sources_file(tmp_path, base, md5):
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"mnist_c": {"url": base, "md5": {"mnist_c.zip": md5}}}))
    return str(path)


def test_defaults_are_the_published_record():
    assert MNIST_C_URL == "https://zenodo.org/record/3239543/files/mnist_c.zip"
    assert MNIST_C_MD5 == "4b34b33045869ee6d424616cd3a65da3"
    assert len(set(CORRUPTIONS)) == 15 and "identity" not in CORRUPTIONS
    assert mnist_c_source(None) == ([MNIST_C_URL], MNIST_C_MD5)


def test_fetch_and_extract_through_the_command_line(http_server, tmp_path, official):
    body, arrays, labels = official
    http_server.files["zenodo/mnist_c.zip"] = body
    sources = sources_file(tmp_path, http_server.url("zenodo/"), hashlib.md5(body).hexdigest())
    data_dir, out_dir = tmp_path / "data", tmp_path / "results/data/corruptions"

    record = tmp_path / "results/data/fetched/mnist_c.json"
    assert main(["fetch", "--data-dir", str(data_dir), "--sources-json", sources, "--record", str(record)]) == 0
    assert (data_dir / "mnist_c.zip").read_bytes() == body
    assert json.loads(record.read_text())["files"]["zip"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert main(["extract", "--data-dir", str(data_dir), "--out-dir", str(out_dir),
                 "--sources-json", sources]) == 0
    assert http_server.hits["zenodo/mnist_c.zip"] == 1
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{c}.npz" for c in CORRUPTIONS)
    for c in CORRUPTIONS:
        with np.load(out_dir / f"{c}.npz") as saved:
            assert sorted(saved.files) == ["x_test", "y_test"]
            assert saved["x_test"].dtype == np.uint8 and saved["x_test"].shape == (10000, 28, 28)
            assert saved["y_test"].dtype == np.int64
            np.testing.assert_array_equal(saved["x_test"], arrays[c][..., 0])
            np.testing.assert_array_equal(saved["y_test"], labels)


@pytest.fixture(scope="module")
def small():
    return mnist_c_zip(count=20)


def test_wrong_checksum_is_retried_once_then_reported(http_server, tmp_path, small):
    body = small[0]
    http_server.files["mnist_c.zip"] = body
    with pytest.raises(DownloadError) as err:
        fetch_mnist_c(tmp_path, url=http_server.url("mnist_c.zip"), wait_s=0, progress=False)
    msg = str(err.value)
    assert http_server.hits["mnist_c.zip"] == 2
    assert str(tmp_path / "mnist_c.zip") in msg and MNIST_C_MD5 in msg and "stage it by hand" in msg
    assert list(tmp_path.iterdir()) == []


def test_truncated_zip_is_retried_once_then_reported(http_server, tmp_path, small):
    body = small[0]
    md5 = hashlib.md5(body).hexdigest()
    http_server.files["mnist_c.zip"] = body
    http_server.truncate["mnist_c.zip"] = -1
    with pytest.raises(DownloadError, match="truncated") as err:
        fetch_mnist_c(tmp_path, url=http_server.url("mnist_c.zip"), md5=md5, wait_s=0, progress=False)
    assert http_server.hits["mnist_c.zip"] == 2 and md5 in str(err.value)
    assert list(tmp_path.iterdir()) == []

    http_server.truncate["mnist_c.zip"] = 1
    path = fetch_mnist_c(tmp_path, url=http_server.url("mnist_c.zip"), md5=md5, wait_s=0, progress=False)
    assert path.read_bytes() == body and http_server.hits["mnist_c.zip"] == 4


def test_offline_missing_zip_says_what_to_stage(http_server, tmp_path, capsys):
    http_server.files["mnist_c.zip"] = b"x"
    sources = sources_file(tmp_path, http_server.base, MNIST_C_MD5)
    assert main(["fetch", "--offline", "--data-dir", str(tmp_path / "d"), "--sources-json", sources]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "d" / "mnist_c.zip") in err and MNIST_C_MD5 in err
    assert http_server.url("mnist_c.zip") in err
    assert sum(http_server.hits.values()) == 0
    with pytest.raises(MissingDataError):
        fetch_mnist_c(tmp_path / "d", offline=True)


def test_staged_zip_with_wrong_md5_is_refused_before_extracting(tmp_path, small, capsys):
    (tmp_path / "mnist_c.zip").write_bytes(small[0])
    out_dir = tmp_path / "out"
    assert main(["extract", "--data-dir", str(tmp_path), "--out-dir", str(out_dir)]) == 1
    err = capsys.readouterr().err
    assert "mnist_c.zip" in err and f"expected {MNIST_C_MD5}" in err
    assert not out_dir.exists()
    with pytest.raises(ChecksumError):
        fetch_mnist_c(tmp_path, offline=True)


def test_truncated_staged_zip_is_a_clear_error_and_writes_nothing(tmp_path, small):
    zip_path = tmp_path / "mnist_c.zip"
    zip_path.write_bytes(small[0][: len(small[0]) // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(CorruptFileError, match="not a readable zip archive") as err:
        extract_mnist_c(zip_path, out_dir, count=20)
    assert str(zip_path) in str(err.value) and MNIST_C_MD5 in str(err.value)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("shape,dtype,count", [((28, 28), np.uint8, 20), ((28, 28, 1), np.float32, 20),
                                               ((28, 28, 1), np.uint8, 19)])
def test_arrays_of_the_wrong_shape_or_type_are_refused(tmp_path, shape, dtype, count):
    body = mnist_c_zip(count=count, shape=shape, dtype=dtype, corruptions=CORRUPTIONS[:2])[0]
    zip_path = tmp_path / "mnist_c.zip"
    zip_path.write_bytes(body)
    with pytest.raises(CorruptFileError, match=r"test_images.npy is .* expected uint8 \(20, 28, 28, 1\)"):
        extract_mnist_c(zip_path, tmp_path / "out", corruptions=CORRUPTIONS[:2], count=20)
    assert not (tmp_path / "out").exists()


def test_subset_of_corruptions_and_unknown_names(tmp_path, small):
    zip_path = tmp_path / "mnist_c.zip"
    zip_path.write_bytes(small[0])
    paths = extract_mnist_c(zip_path, tmp_path / "out", corruptions=["fog", "stripe"], count=20)
    assert [p.name for p in paths] == ["fog.npz", "stripe.npz"]
    with pytest.raises(ValueError, match="unknown MNIST-C corruption"):
        extract_mnist_c(zip_path, tmp_path / "out", corruptions=["identity"], count=20)
