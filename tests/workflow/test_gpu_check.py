"""benchmarks/gpu_check.sh runs end to end on the CPU at a small size (the size knob); no timing."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.workflow_runs import python_env


def test_gpu_check_runs_end_to_end_on_the_cpu_at_small_size(tmp_path):
    done = subprocess.run(
        [os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--images", "256", "--test-images", "64",
         "--aux-images", "256", "--mixing-images", "8", "--epochs", "1", "--model", "small_convnet",
         "--device", "cpu", "--out", str(tmp_path)],
        env=python_env(PYTHON=sys.executable), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "(a) one epoch" in out and "ratio" in out and "(b) the grid" in out and "total: training" in out
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(r["augment"], r["oe"]) for r in result["grid"]] == [
        (a, o) for a in ("none", "saltpepper", "pixmix") for o in ("baseline", "oe")]
    for row in result["grid"]:
        assert row["train_s"] > 0 and row["eval_s"] > 0 and 0 <= row["test_accuracy"] <= 1
        assert row["peak_gpu_memory_mib"] is None  # on the CPU
    ab = result["usual_vs_ours"]
    assert ab["ratio"] == pytest.approx(ab["ours"] / ab["usual"])
    assert result["total_s"] >= result["total_train_s"] > 0
    assert "(c) PixMix alone: one 256-image epoch" in out
    assert result["pixmix_epoch"]["images"] == 256 and result["pixmix_epoch"]["chunk"] == 8192
    assert result["pixmix_epoch"]["seconds"] > 0
