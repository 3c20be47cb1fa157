"""Fault injection, PixMix mixing folder, through the real workflow: a missing folder stops
the run before any job, an empty one stops the mixing_set job with lib.data.mixing's message
naming the folder and the fix, and once pictures are staged the same command completes; a
picture added later rebuilds the mixing set.

Only results/data/mixing.npz is asked for, so each run is a few seconds.
"""
import numpy as np
import pytest
from PIL import Image

from tests.helpers.faults import files_under, finished_looking, write_study_config
from tests.helpers.workflow_runs import job_counts, run_snakemake

pytestmark = pytest.mark.slow

TARGET = "results/data/mixing.npz"
# An option between --configfile (which takes several files) and the target ends the file list.
TARGET_ARGS = ("--cores", "1", TARGET)


def folder_study(tmp_path, folder):
    return write_study_config(tmp_path / "cfg", augment=["pixmix"],
                              pixmix={"mixing": {"source": "folder", "folder": str(folder), "count": 8}})


def stage_pictures(folder, n=3, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 40), dtype=np.uint8)).save(folder / f"p{seed}-{i}.png")


def test_missing_mixing_folder_stops_the_run_before_any_job(tmp_path):
    missing = tmp_path / "no-such-folder"
    result = run_snakemake(tmp_path / "run", folder_study(tmp_path, missing), "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"config key 'pixmix.mixing.folder': '{missing}' is not an existing folder" in output
    assert "stage the mixing images there or use source: fractals" in output
    assert not (tmp_path / "run" / "results").exists()


def test_empty_mixing_folder_stops_the_mixing_job_and_staged_pictures_fix_it(tmp_path):
    folder, run = tmp_path / "staged", tmp_path / "run"
    folder.mkdir()
    (folder / "README.txt").write_text("pictures go here")
    config = folder_study(tmp_path, folder)

    result = run_snakemake(run, config, *TARGET_ARGS)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"mixing-set folder '{folder}' holds no image files" in output, output[-3000:]
    assert "stage the pictures there or set pixmix.mixing.source: fractals" in output
    assert "Traceback" not in output
    assert finished_looking(files_under(run / "results" / "data")) == []

    stage_pictures(folder)
    result = run_snakemake(run, config, *TARGET_ARGS)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with np.load(run / TARGET) as f:
        assert f["images"].shape == (8, 28, 28) and str(f["source"]) == f"folder:{folder}"

    assert "mixing_set" not in job_counts(run_snakemake(run, config, "-n", *TARGET_ARGS).stdout)
    stage_pictures(folder, n=1, seed=1)  # a picture added to the staged folder rebuilds the set
    assert job_counts(run_snakemake(run, config, "-n", *TARGET_ARGS).stdout)["mixing_set"] == 1
