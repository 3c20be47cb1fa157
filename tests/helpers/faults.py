"""Helpers of the fault-injection suite (tests/*/test_faults_*.py): the bad configs, folders
that refuse writes, a training loss that turns NaN, file listings, a reduced study config,
and exact comparisons of two runs.

    from tests.helpers.faults import read_only_folder, files_under, nan_loss_at_step, write_study_config
    with read_only_folder(tmp_path / "results/models"):
        ...                                   # creating a file there fails, even for root
    assert files_under(tmp_path / "results") == []
    with nan_loss_at_step(9):
        lib.train.loop.main(argv)             # the 10th optimiser step's loss is NaN
"""
import contextlib
import itertools
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.workflow_runs import study_config

# Bad configs: id -> (override of the tiny preset, key named in the message, words of the fix).
# tests/unit/test_faults_config.py checks each through lib.config, tests/workflow/test_faults_config.py
# a few through `snakemake -n`. To add a case (e.g. when a new key lands), append it here.
BAD_CONFIGS = {
    "unknown_key": ({"epochs": 3}, "'epochs'", ["unknown key at the top level", "did you mean 'train.epochs'?",
                                                "allowed keys"]),
    "unknown_nested_key": ({"train": {"epoch": 3}}, "'train.epoch'", ["unknown key under 'train'",
                                                                      "did you mean 'epochs'?"]),
    "wrong_type": ({"train": {"lr": "fast"}}, "'train.lr'", ["wrong type", "expected number"]),
    "negative_epochs": ({"train": {"epochs": -1}}, "'train.epochs'", ["out of range", "minimum 1"]),
    "empty_augment": ({"augment": []}, "'augment'", ["the list is empty", "at least 1"]),
    "augment_not_a_list": ({"augment": "none"}, "'augment'", ["wrong type", "expected array"]),
    "unknown_augment": ({"augment": ["none", "pixmx"]}, "'augment[1]'", ["'pixmx' is not allowed", "none, saltpepper"]),
    "unknown_score": ({"scores": ["msp", "msq"]}, "'scores[1]'", ["'msq' is not allowed", "msp, xent"]),
    "unknown_ood_set": ({"ood_sets": ["gaussian", "fashion"]}, "'ood_sets[1]'", ["'fashion' is not allowed", "negated"]),
    "oe_source_missing": ({"oe": ["oe"], "outlier_exposure": {"source": None}}, "'outlier_exposure.source'",
                          ["wrong type", "one of: jigsaw"]),
    "seed_not_integer": ({"seeds": [1, 2.5]}, "'seeds[1]'", ["wrong type", "expected integer"]),
    "seeds_as_text": ({"seeds": "1,2"}, "'seeds'", ["wrong type", "expected array"]),
    "duplicate_seed": ({"seeds": [1, 1]}, "'seeds'", ["lists an entry twice"]),
    "pixmix_k_negative": ({"pixmix": {"k": -1}}, "'pixmix.k'", ["out of range", "minimum 0"]),
    "pixmix_beta_zero": ({"pixmix": {"beta": 0}}, "'pixmix.beta'", ["out of range", "exclusiveMinimum 0"]),
    "validation_set_is_a_test_set": ({"validation_ood_sets": ["blobs", "gaussian"]}, "'validation_ood_sets'",
                                     ["gaussian also in 'ood_sets'", "Remove them from one of the two lists"]),
    "oe_tune_without_baseline": ({"oe": ["oe_tune"]}, "'oe'", ["'baseline' must be listed too"]),
    "shell_in_data_dir": ({"data_dir": "data; rm -rf ~"}, "'data_dir'", ["characters that are not allowed",
                                                                          "letters, digits"]),
    "shell_in_seed": ({"seeds": ["1; touch pwned"]}, "'seeds[0]'", ["wrong type", "expected integer"]),
}


# A one-model study: an augmentation and OE (both draw from the job's generator), two
# epochs (so a checkpoint exists mid-run), one OOD set and one score. About a minute.
REDUCED_STUDY = {
    "in_distribution": "digits",
    "augment": ["saltpepper"],
    "oe": ["oe"],
    "seeds": [1],
    "ood_sets": ["gaussian"],
    "scores": ["msp"],
    "synthetic_size": 100,
    "train": {"model": "small_convnet", "epochs": 2, "batch_size": 64, "device": "cpu"},
    "outlier_exposure": {"source": "jigsaw", "size": 200},
    "corruptions": "generated",
}


def write_study_config(folder, **overrides):
    """REDUCED_STUDY with overrides merged in (sections key by key), as <folder>/study.yaml."""
    return study_config(Path(folder) / "study.yaml", REDUCED_STUDY, **overrides)


def files_under(folder):
    """Sorted relative paths of every file under folder ([] when it does not exist)."""
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def finished_looking(files):
    """The files of a listing whose names do not mark them as temporary (.tmp-*, .*.tmp, .*.part)."""
    return [f for f in files if not os.path.basename(f).startswith((".tmp-", "."))]


@contextlib.contextmanager
def read_only_folder(folder):
    """Make folder refuse new files for the duration; as root (which ignores modes) via chattr +i."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(folder.stat().st_mode)
    immutable = False
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:
            done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
            if done.returncode != 0:
                pytest.skip(f"running as root and chattr +i failed ({done.stderr.decode().strip()}): "
                            "no way to make a folder read-only here")
            immutable = True
        probe = folder / ".probe"
        try:
            probe.write_text("x")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip(f"{folder} stays writable on this file system")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(mode)


@contextlib.contextmanager
def nan_loss_at_step(step):
    """Within the block, the loss of lib.train.loop's optimiser step number `step` (0-based,
    counted from the block's start, across epochs) is NaN: a diverging run, injected from the
    test side into the training loop's own loss function, which train_step looks up per call."""
    import lib.train.loop
    real_loss, calls = lib.train.loop.oe_loss, itertools.count()

    def loss(*args, **kwargs):
        value = real_loss(*args, **kwargs)
        return value * float("nan") if next(calls) == step else value
    lib.train.loop.oe_loss = loss
    try:
        yield
    finally:
        lib.train.loop.oe_loss = real_loss


def npz_arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def assert_same_arrays(a, b, what):
    """Bit-identical: same keys, dtypes, shapes and bytes."""
    assert sorted(a) == sorted(b), what
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, f"{what}: {key}"
        assert a[key].tobytes() == b[key].tobytes(), f"{what}: {key} differs"


def assert_same_logits(run_a, run_b):
    """Every results/logits/**.npz of two runs holds bit-identical arrays (zip timestamps aside)."""
    names_a = [f for f in files_under(Path(run_a) / "results/logits") if f.endswith(".npz")]
    names_b = [f for f in files_under(Path(run_b) / "results/logits") if f.endswith(".npz")]
    assert names_a and names_a == names_b
    for name in names_a:
        assert_same_arrays(npz_arrays(Path(run_a) / "results/logits" / name),
                           npz_arrays(Path(run_b) / "results/logits" / name), name)


def read_table(path, run_dir):
    """A results/tables CSV with run_dir stripped from absolute `source` paths."""
    table = pd.read_csv(path, keep_default_na=False, dtype=str)
    prefix = str(Path(run_dir).resolve()) + os.sep
    if "source" in table:
        table["source"] = table["source"].str.replace(prefix, "", regex=False)
    return table


def assert_same_tables(run_a, run_b):
    names = files_under(Path(run_a) / "results/tables")
    assert names and names == files_under(Path(run_b) / "results/tables")
    for name in names:
        a = read_table(Path(run_a) / "results/tables" / name, run_a)
        b = read_table(Path(run_b) / "results/tables" / name, run_b)
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)


def model_state(path):
    import torch
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in blob["state_dict"].items()}

