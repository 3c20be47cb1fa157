"""PixMix through the real workflow: the plan of the default study, the mixing_set job, PixMix
models added to the shared tiny study (only they are trained) with the samples figure, and
what a config change reruns."""
import base64
import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from lib.config import load_config_file
from tests.helpers import ROOT
from tests.helpers.workflow_runs import job_counts, run_snakemake, study_config

# A train job's output line: rule all lists every model.pt among its inputs, and must not count.
MODEL = re.compile(r"output: results/models/(\w+)/(\w+)/seed(\d+)/model\.pt")


def planned_models(output):
    return {m.groups() for m in MODEL.finditer(output)}


def test_default_study_plans_three_augments_and_one_mixing_set(default_study_plan):
    workdir, result = default_study_plan
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    cfg = load_config_file(f"{ROOT}/config.yaml")
    assert cfg["augment"] == ["none", "saltpepper", "pixmix"]
    counts = job_counts(output)
    assert counts["mixing_set"] == 1
    assert counts["train"] == 3 * len(cfg["oe"]) * len(cfg["seeds"])
    assert {a for a, _, _ in planned_models(output)} == {"none", "saltpepper", "pixmix"}
    assert not (workdir / "results").exists()


def test_a_study_without_pixmix_plans_no_mixing_set(tmp_path):
    result = run_snakemake(tmp_path, "presets/tiny.yaml", "-n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "mixing_set" not in job_counts(output) and "results/data/mixing.npz" not in output


class _Figure:
    def __init__(self, html):
        block = re.search(r'<figure id="augment-samples-figure"><img alt="([^"]*)" src="data:image/png;base64,([^"]+)"',
                          html)
        assert block, "no samples figure in the report"
        self.alt = block.group(1)
        self.png = Image.open(io.BytesIO(base64.b64decode(block.group(2))))


@pytest.mark.slow
def test_tiny_study_with_pixmix_trains_pixmix_models_and_shows_the_samples(tiny_study, tmp_path):
    # PixMix added to a copy of the finished tiny study: its Base models and data sets are
    # reused, and only the PixMix models and the mixing set are made.
    config = study_config(tmp_path / "study.yaml", augment=["none", "pixmix"], oe=["baseline", "oe"],
                          pixmix={"mixing": {"count": 200, "seed": 5}})
    run = tmp_path / "run"
    shutil.copytree(tiny_study, run, symlinks=True)  # keeps the mtimes Snakemake plans by
    result = run_snakemake(run, config, "--cores", "2", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["train"] == 2 and counts["mixing_set"] == 1 and counts["evaluate"] == 2, counts
    results = run / "results"

    with np.load(results / "data/mixing.npz") as f:
        assert f["images"].shape == (200, 28, 28) and str(f["source"]) == "fractals"
    assert "wrote 200 mixing pictures" in (results / "logs/data/mixing.log").read_text()
    assert (results / "benchmarks/data/mixing.tsv").stat().st_size > 0
    for oe in ("baseline", "oe"):
        assert (results / f"models/pixmix/{oe}/seed1/model.pt").stat().st_size > 0
        assert f"training pixmix/{oe}/seed1" in (results / f"logs/train/pixmix/{oe}/seed1.log").read_text()
    accuracy = (results / "tables/accuracy.csv").read_text()
    assert "pixmix,baseline" in accuracy and "pixmix,oe" in accuracy

    html = (results / "report.html").read_text()
    figure = _Figure(html)
    assert figure.png.format == "PNG" and figure.png.size[1] > 150
    assert "none, pixmix, and PixMix mixing pictures" in figure.alt
    assert "200 pictures from fractals" in html

    # Leak marks of the mixing set touch the report only; its size retrains the PixMix models only.
    marks = study_config(tmp_path / "marks.yaml", augment=["none", "pixmix"], oe=["baseline", "oe"],
                         pixmix={"mixing": {"count": 200, "seed": 5, "shares_source_with": ["gaussian"]}})
    plan = run_snakemake(run, marks, "-n")
    counts = job_counts(plan.stdout + plan.stderr)
    assert plan.returncode == 0 and "train" not in counts and "mixing_set" not in counts, plan.stdout[-3000:]
    assert counts["leak_marks"] == 1 and counts["report"] == 1

    bigger = study_config(tmp_path / "bigger.yaml", augment=["none", "pixmix"], oe=["baseline", "oe"],
                          pixmix={"mixing": {"count": 300, "seed": 5}})
    plan = run_snakemake(run, bigger, "-n")
    output = plan.stdout + plan.stderr
    assert plan.returncode == 0, output[-3000:]
    assert job_counts(output)["mixing_set"] == 1
    assert planned_models(output) == {("pixmix", "baseline", "1"), ("pixmix", "oe", "1")}
