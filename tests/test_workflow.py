"""The real workflow: the plan of the default study, and a full run of the tiny preset."""
import re
from html.parser import HTMLParser

import pytest

from lib.config import load_config_file, validate_config
from tests.workflow import ROOT, run_snakemake


def job_counts(output):
    """Parse Snakemake's 'Job stats' table into {rule: count}."""
    counts = {}
    block = output.split("Job stats:")[-1]
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def test_dry_run_of_the_default_study_plans_the_whole_grid(tmp_path):
    result = run_snakemake(tmp_path, None, "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = validate_config(load_config_file(f"{ROOT}/config.yaml"))
    n_models = len(cfg["augment"]) * len(cfg["oe"]) * len(cfg["seeds"])
    counts = job_counts(result.stdout + result.stderr)
    assert counts["train"] == n_models
    assert counts["evaluate"] == n_models
    assert counts["score"] == n_models * len(cfg["ood_sets"]) * len(cfg["scores"])
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


def test_a_bad_config_stops_before_any_job(tmp_path):
    result = run_snakemake(tmp_path, "presets/tiny.yaml", "-n", config={"augment": "[none,pixmx]"})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config key 'augment[1]': 'pixmx' is not allowed; allowed values: none, saltpepper, pixmix" in output
    assert not (tmp_path / "results").exists()


class _Tables(HTMLParser):
    """Collects the text of every <td> per table id."""

    def __init__(self):
        super().__init__()
        self.tables, self._table, self._cell = {}, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = dict(attrs).get("id")
            self.tables[self._table] = []
        elif tag == "td":
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


@pytest.mark.slow
def test_tiny_study_runs_end_to_end_and_the_report_has_numbers(tmp_path):
    result = run_snakemake(tmp_path, "presets/tiny.yaml", "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    html = (tmp_path / "results" / "report.html").read_text()
    parser = _Tables()
    parser.feed(html)
    number = re.compile(r"^\d+\.\d\d( ± \d+\.\d\d)? \(n=\d+\)")
    accuracy_cells = [c for c in parser.tables["study-accuracy"] if number.match(c)]
    auroc_cells = [c for c in parser.tables["study-auroc"] if number.match(c)]
    assert len(accuracy_cells) >= 2      # Base and S&P test accuracy
    assert len(auroc_cells) == 2 * 2 * 4  # 2 OOD sets x 2 scores x 4 models
    for name in ("detection.csv", "accuracy.csv"):
        assert (tmp_path / "results" / "tables" / name).stat().st_size > 0
