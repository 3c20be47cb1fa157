"""lib.data.download against a local HTTP server: checks, retries, mirrors, recorded checksums."""
import gzip
import hashlib
import io
import json
import os
import socket
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lib.data.download import (ChecksumError, CorruptFileError, DownloadError, MissingDataError, download,
                          ensure_file, record_checksum, recorded_checksums, verify_or_record, write_atomically)


def md5(data):
    return hashlib.md5(data).hexdigest()


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_download_writes_verified_file_and_returns_sha256(http_server, tmp_path):
    body = bytes(range(256)) * 1000
    http_server.files["a/x.bin"] = body
    dest = tmp_path / "sub" / "x.bin"
    sha = download(http_server.url("a/x.bin"), dest, md5=md5(body), wait_s=0, progress=False)
    assert dest.read_bytes() == body
    assert sha == hashlib.sha256(body).hexdigest()
    assert leftovers(dest.parent) == []


def test_checksum_mismatch_retries_then_names_file_url_and_both_checksums(http_server, tmp_path):
    http_server.files["x.gz"] = b"not what was published"
    dest = tmp_path / "x.gz"
    with pytest.raises(DownloadError) as err:
        download(http_server.url("x.gz"), dest, md5="0" * 32, retries=2, wait_s=0, progress=False)
    msg = str(err.value)
    assert http_server.hits["x.gz"] == 3
    assert str(dest) in msg and http_server.url("x.gz") in msg
    assert "0" * 32 in msg and md5(b"not what was published") in msg
    assert "stage it by hand" in msg
    assert not dest.exists() and leftovers(tmp_path) == []


def test_truncated_transfer_is_retried_and_succeeds(http_server, tmp_path):
    body = b"0123456789" * 5000
    http_server.files["t.bin"] = body
    http_server.truncate["t.bin"] = 1
    dest = tmp_path / "t.bin"
    download(http_server.url("t.bin"), dest, retries=1, wait_s=0, progress=False)
    assert http_server.hits["t.bin"] == 2
    assert dest.read_bytes() == body


def test_always_truncated_transfer_fails_without_leaving_a_file(http_server, tmp_path):
    http_server.files["t.npy"] = b"x" * 10000
    http_server.truncate["t.npy"] = -1
    dest = tmp_path / "t.npy"
    with pytest.raises(DownloadError, match="truncated: received 5000 of 10000 bytes"):
        download(http_server.url("t.npy"), dest, retries=1, wait_s=0, progress=False)
    assert http_server.hits["t.npy"] == 2
    assert list(tmp_path.iterdir()) == []


def test_missing_on_first_mirror_falls_back_to_second_without_retrying_404(http_server, tmp_path):
    http_server.files["m2/x"] = b"payload"
    dest = tmp_path / "x"
    download([http_server.url("m1/x"), http_server.url("m2/x")], dest, md5=md5(b"payload"),
             retries=3, wait_s=0, progress=False)
    assert http_server.hits["m1/x"] == 1 and http_server.hits["m2/x"] == 1
    assert dest.read_bytes() == b"payload"


def test_server_error_is_retried(http_server, tmp_path):
    http_server.files["x"] = b"payload"
    http_server.fail["x"] = [503, 500]
    download(http_server.url("x"), tmp_path / "x", retries=2, wait_s=0, progress=False)
    assert http_server.hits["x"] == 3


def test_refused_connection_is_a_download_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="URLError"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=1, wait_s=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_size_pin_is_checked(http_server, tmp_path):
    http_server.files["x"] = b"12345"
    with pytest.raises(DownloadError, match="size is 5 bytes, expected 6"):
        download(http_server.url("x"), tmp_path / "x", size=6, retries=0, wait_s=0, progress=False)


def test_first_download_records_sha256_and_later_uses_enforce_it(http_server, tmp_path):
    body = gzip.compress(b"no published checksum", mtime=0)
    http_server.files["n/f.tar.gz"] = body
    urls = [http_server.url("n/f.tar.gz")]
    path = ensure_file(tmp_path, "notMNIST/f.tar.gz", urls, wait_s=0, progress=False)
    table = json.loads((tmp_path / "CHECKSUMS.json").read_text())
    assert table["notMNIST/f.tar.gz"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert table["notMNIST/f.tar.gz"]["source"] == urls[0]

    path.write_bytes(gzip.compress(b"tampered", mtime=0))
    with pytest.raises(ChecksumError) as err:
        ensure_file(tmp_path, "notMNIST/f.tar.gz", urls, progress=False)
    assert "CHECKSUMS.json" in str(err.value) and str(path) in str(err.value)

    # Deleted and fetched again: a changed upstream file is refused, not silently re-recorded.
    path.unlink()
    http_server.files["n/f.tar.gz"] = gzip.compress(b"a different upstream version", mtime=0)
    with pytest.raises(DownloadError, match="sha256 is"):
        ensure_file(tmp_path, "notMNIST/f.tar.gz", urls, retries=0, wait_s=0, progress=False)
    assert not path.exists()


def test_offline_missing_file_never_touches_the_network(http_server, tmp_path):
    http_server.files["x.gz"] = b"payload"
    with pytest.raises(MissingDataError) as err:
        ensure_file(tmp_path, "X/raw/x.gz", [http_server.url("x.gz")], md5=md5(b"payload"), offline=True)
    assert http_server.hits["x.gz"] == 0
    msg = str(err.value)
    assert str(tmp_path / "X/raw/x.gz") in msg and http_server.url("x.gz") in msg and md5(b"payload") in msg


def test_present_file_with_wrong_pin_is_refused(tmp_path):
    (tmp_path / "x").write_bytes(b"abc")
    with pytest.raises(ChecksumError, match="md5 is 900150983cd24fb0d6963f7d28e17f72, expected"):
        verify_or_record(tmp_path / "x", tmp_path, "x", md5="1" * 32)
    digests = verify_or_record(tmp_path / "x", tmp_path, "x", md5="900150983cd24fb0d6963f7d28e17f72")
    assert digests["size"] == 3


def test_parallel_records_keep_every_entry(tmp_path):
    threads = [threading.Thread(target=record_checksum, args=(tmp_path, f"k{i}", f"{i:064x}", "u"))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(recorded_checksums(tmp_path)) == sorted(f"k{i}" for i in range(8))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=5000))
def test_downloaded_bytes_equal_served_bytes(http_server, tmp_path, body):
    http_server.files["b"] = body
    dest = tmp_path / md5(body)
    sha = download(http_server.url("b"), dest, md5=md5(body), retries=0, progress=False)
    assert dest.read_bytes() == body and sha == hashlib.sha256(body).hexdigest()


def test_published_files_get_ordinary_permissions(http_server, tmp_path):
    http_server.files["x"] = b"payload"
    dest = tmp_path / "x"
    download(http_server.url("x"), dest, retries=0, progress=False)
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_atomic_write_leaves_nothing(tmp_path):
    def write_half_then_fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "out.npz", write_half_then_fail)
    assert list(tmp_path.iterdir()) == []
    write_atomically(tmp_path / "out.npz", lambda f: f.write(b"whole"))
    assert (tmp_path / "out.npz").read_bytes() == b"whole"


def test_unpinned_download_that_does_not_read_to_its_end_is_not_recorded(http_server, tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.zeros((50, 32, 32, 3), dtype=np.uint8))
    # Served complete-looking (right Content-Length) but cut: only the format shows it.
    http_server.files["300K_random_images.npy"] = buf.getvalue()[:-1000]
    with pytest.raises(DownloadError, match="truncated or damaged npy file"):
        ensure_file(tmp_path, "300K_random_images.npy", [http_server.url("300K_random_images.npy")],
                    retries=1, wait_s=0, progress=False)
    assert http_server.hits["300K_random_images.npy"] == 2
    assert list(tmp_path.iterdir()) == []

    staged = tmp_path / "x.tar.gz"
    staged.write_bytes(gzip.compress(b"a" * 10000)[:-30])
    with pytest.raises(CorruptFileError, match="x.tar.gz: truncated or damaged gz file"):
        verify_or_record(staged, tmp_path, "x.tar.gz")
    assert recorded_checksums(tmp_path) == {}
