"""The real workflow: the plan of the default study, and a full run of the tiny preset."""
import re

import pytest

from lib.config import load_config_file, validate_config
from tests.helpers import ROOT
from tests.helpers.report_page import parse_page
from tests.helpers.workflow_runs import job_counts, run_snakemake


def test_dry_run_of_the_default_study_plans_the_whole_grid(default_study_plan):
    workdir, result = default_study_plan
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = validate_config(load_config_file(f"{ROOT}/config.yaml"))
    n_models = len(cfg["augment"]) * len(cfg["oe"]) * len(cfg["seeds"])
    counts = job_counts(result.stdout + result.stderr)
    assert counts["train"] == n_models
    assert counts["evaluate"] == n_models
    assert counts["score"] == n_models * len(cfg["ood_sets"]) * len(cfg["scores"])
    assert not (workdir / "results").exists() and not (workdir / "data").exists()


def test_a_bad_config_stops_before_any_job(tmp_path):
    result = run_snakemake(tmp_path, "presets/tiny.yaml", "-n", config={"augment": "[none,pixmx]"})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config key 'augment[1]': 'pixmx' is not allowed; allowed values: none, saltpepper, pixmix" in output
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_tiny_study_runs_end_to_end_and_the_report_has_numbers(tiny_study):
    html = (tiny_study / "results" / "report.html").read_text()
    page = parse_page(html)
    number = re.compile(r"^\d+\.\d\d( ± \d+\.\d\d)? \(n=\d+\)")
    accuracy_cells = [c.text for c in page.tables["study-accuracy"].body_cells() if number.match(c.text)]
    auroc_cells = [c.text for c in page.tables["study-auroc"].body_cells() if number.match(c.text)]
    assert len(accuracy_cells) >= 2      # Base and S&P test accuracy
    assert len(auroc_cells) == (2 + 2) * 2 * 4  # (2 OOD sets + near and far means) x 2 scores x 4 models
    for name in ("detection.csv", "accuracy.csv"):
        assert (tiny_study / "results" / "tables" / name).stat().st_size > 0
