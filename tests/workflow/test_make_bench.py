"""`make bench` runs end to end at tiny size and writes its table, CSV and JSON.

No test here times anything: the numbers of a tiny run mean nothing, only their presence.
"""
import json
import math
import subprocess
import sys

from benchmarks.run import COLUMNS
from tests.helpers import ROOT
from tests.helpers.workflow_runs import python_env


def test_make_bench_runs_at_tiny_size_and_writes_csv_and_json(tmp_path):
    done = subprocess.run(["make", "-s", "bench", f"PY={sys.executable}", f"BENCH_ARGS=--tiny --out {tmp_path}"],
                          cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout.splitlines()
    names = ["pixmix batched on the CPU's", "pixmix batched on one thread", "augmentation overhead", "vs the usual setup", "OE step cost", "evaluation",
             "snakemake -n", "differences step"]
    for name in names:
        assert any(row.startswith(name) and " | " in row for row in table), name
    assert "glibc MALLOC_* set (JOB_ENV)" in table[-1]
    saved = json.loads((tmp_path / "bench-tiny.json").read_text())
    assert len(saved["lines"]) == len(names)
    assert all(line["name"].startswith(name) for line, name in zip(saved["lines"], names))
    for line in saved["lines"]:
        assert set(COLUMNS) <= set(line) and math.isfinite(line["ratio"]) and line["ratio"] > 0
    for line in saved["lines"][:2]:  # the PixMix lines also keep every repeat and the median ratio
        assert math.isfinite(line["ratio_median"]) and line["ratio_median"] > 0
        assert set(line["repeat_images_per_s"]) == {"reference", "batched", "one_thread"}
        assert "ratio of the median repeats" in line["detail"]
    assert saved["machine"]["malloc"]["MALLOC_TOP_PAD_"] == "536870912" and saved["machine"]["cores"] >= 1
    csv_rows = (tmp_path / "bench-tiny.csv").read_text().splitlines()
    assert csv_rows[0] == ",".join(COLUMNS) and len(csv_rows) == 1 + len(names)
