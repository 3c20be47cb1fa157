"""Fault injection, data: a damaged or missing raw file stops the data step with an error that
names the file and the fix, leaves nothing under results/, and once the file is fixed the
same command completes.

Each case runs the real command-line entry points (`python -m lib.data.real prepare`,
`python -m lib.data.mnist_c extract`, called through their main()) on files staged under a
data_dir, as a user staging by hand would. To add a case: append a DataFault to
DATA_FAULTS. The PixMix mixing folder's faults run through the workflow:
tests/workflow/test_faults_mixing.py.
"""
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pytest

import lib.data.mnist_c
import lib.data.real
from tests.helpers.faults import files_under
from tests.helpers.fake_data import build_idx, build_tiny, mnist_c_zip, npy_bytes

IDX_FILES, _ = build_idx(np.random.default_rng(11))
TINY_FILES, _ = build_tiny(np.random.default_rng(12))
IDX_UNPINNED = {"mnist": {"md5": {f: None for f in IDX_FILES}}}  # sha256 recorded on first use
IDX_PINNED = {"mnist": {"md5": {f: hashlib.md5(b).hexdigest() for f, b in IDX_FILES.items()}}}


def stage(data_dir, files, folder=""):
    for name, body in files.items():
        path = data_dir / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


@dataclass
class DataFault:
    command: str                      # "real_data" or "mnist_c"
    dataset: str                      # the set the command prepares
    bad: dict                         # file -> bytes staged first (None: leave the file out)
    good: dict                        # file -> bytes that fix it
    folder: str                       # where the files sit under data_dir
    expect: list                      # words the error must contain, besides the file's path
    culprit: str                      # the file the error must name
    sources: dict = field(default=None)


def _with(files, **changes):
    return {**files, **changes}


IMAGES = "t10k-images-idx3-ubyte.gz"
DATA_FAULTS = {
    "truncated_gzip": DataFault(
        "real_data", "mnist", _with(IDX_FILES, **{IMAGES: IDX_FILES[IMAGES][:-40]}), IDX_FILES, "MNIST/raw",
        ["truncated or damaged gz file", "Delete it and fetch again"], IMAGES, IDX_UNPINNED),
    "wrong_idx_magic": DataFault(
        "real_data", "mnist", _with(IDX_FILES, **{IMAGES: IDX_FILES["t10k-labels-idx1-ubyte.gz"]}), IDX_FILES,
        "MNIST/raw", ["wrong IDX magic number", "Delete it and rerun the fetch"], IMAGES, IDX_UNPINNED),
    "wrong_checksum": DataFault(
        "real_data", "mnist", _with(IDX_FILES, **{IMAGES: IDX_FILES["train-images-idx3-ubyte.gz"]}), IDX_FILES,
        "MNIST/raw", ["md5 is", "expected " + IDX_PINNED["mnist"]["md5"][IMAGES], "To stage it by hand"],
        IMAGES, IDX_PINNED),
    "missing_file_offline": DataFault(
        "real_data", "mnist", _with(IDX_FILES, **{IMAGES: None}), IDX_FILES, "MNIST/raw",
        ["offline mode", "[MISSING]", "python -m lib.data.real fetch mnist"], IMAGES, IDX_UNPINNED),
    "npy_wrong_shape": DataFault(
        "real_data", "tiny300k", {"300K_random_images.npy": npy_bytes(np.zeros((20, 28, 28), np.uint8))},
        TINY_FILES, "", ["expected uint8 (N, 32, 32, 3)", "stage a good copy"], "300K_random_images.npy"),
    "truncated_npy": DataFault(
        "real_data", "tiny300k", {"300K_random_images.npy": TINY_FILES["300K_random_images.npy"][:-700]},
        TINY_FILES, "", ["truncated", "Delete it"], "300K_random_images.npy"),
}


def run_command(fault, data_dir, results):
    """The command a prepare rule runs; returns its exit status."""
    sources = ["--sources-json", json.dumps(fault.sources)] if fault.sources else []
    if fault.command == "real_data":
        return lib.data.real.main(["prepare", fault.dataset, "--data-dir", str(data_dir),
                                   "--out", str(results / "data" / f"{fault.dataset}.npz"), *sources])
    return lib.data.mnist_c.main(["extract", "--data-dir", str(data_dir), "--out-dir", str(results / "data/corruptions"),
                             "--corruptions", "shot_noise,fog", *sources])


def check_fault(fault, tmp_path, capsys):
    data_dir, results = tmp_path / "data", tmp_path / "results"
    stage(data_dir, {k: v for k, v in fault.bad.items() if v is not None}, fault.folder)
    assert run_command(fault, data_dir, results) == 1
    err = capsys.readouterr().err
    culprit = data_dir / fault.folder / fault.culprit
    assert str(culprit) in err, err
    for words in fault.expect:
        assert words in err, (words, err)
    assert "Traceback" not in err
    assert files_under(results) == []
    assert [f for f in files_under(data_dir) if f.endswith((".tmp", ".part"))] == []

    stage(data_dir, fault.good, fault.folder)
    assert run_command(fault, data_dir, results) == 0, capsys.readouterr().err
    return results


@pytest.mark.parametrize("case", sorted(DATA_FAULTS))
def test_data_fault_is_named_leaves_no_output_and_a_fixed_file_completes(case, tmp_path, capsys):
    fault = DATA_FAULTS[case]
    results = check_fault(fault, tmp_path, capsys)
    with np.load(results / "data" / f"{fault.dataset}.npz") as saved:
        split = "x_test" if "x_test" in saved.files else "x_train"
        assert saved[split].dtype == np.uint8 and saved[split].shape[1:] == (28, 28)


def test_replaced_file_is_not_held_to_the_checksum_of_the_bad_copy(tmp_path, capsys):
    # Unpinned files get their sha256 recorded on first use; a copy that reads to its end
    # but has the wrong content must not become the reference the good copy is refused by.
    fault = DATA_FAULTS["npy_wrong_shape"]
    check_fault(fault, tmp_path, capsys)
    recorded = json.loads((tmp_path / "data/CHECKSUMS.json").read_text())
    good = hashlib.sha256(TINY_FILES["300K_random_images.npy"]).hexdigest()
    assert recorded["300K_random_images.npy"]["sha256"] == good


@pytest.fixture(scope="module")
def mnist_c_archives():
    good, _, _ = mnist_c_zip(corruptions=lib.data.mnist_c.CORRUPTIONS)
    return good, good[: len(good) // 2]


@pytest.mark.parametrize("damage", ["wrong_checksum", "truncated_zip"])
def test_mnist_c_damaged_zip_stops_extract_and_a_good_zip_completes(damage, mnist_c_archives, tmp_path, capsys):
    good, truncated = mnist_c_archives
    pinned = {"mnist_c": {"md5": {"mnist_c.zip": hashlib.md5(good).hexdigest() if damage == "wrong_checksum"
                                  else None}}}
    bad = good.replace(b"mnist_c/fog/", b"mnist_c/fox/", 1) if damage == "wrong_checksum" else truncated
    expect = ["md5 is", "expected"] if damage == "wrong_checksum" else ["truncated or damaged", "Delete"]
    fault = DataFault("mnist_c", "mnist_c", {"mnist_c.zip": bad}, {"mnist_c.zip": good}, "", expect,
                      "mnist_c.zip", pinned)
    results = check_fault(fault, tmp_path, capsys)
    assert files_under(results) == ["data/corruptions/fog.npz", "data/corruptions/shot_noise.npz"]
