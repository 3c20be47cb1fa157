"""External checkpoints (config external_models) go through the whole study as their own columns,
and a wrong sha256 or architecture stops the run before any job, naming the model."""
import hashlib
import os

import pytest
import yaml

from tests.helpers.report_page import all_problems, parse_page
from tests.helpers.shared_fixtures import OE_CHECKPOINTS, needs_oe_checkpoints
from tests.helpers.workflow_runs import ROOT, run_snakemake

NAMES = {"oe_paper_baseline": "baseline_epoch_9.pt", "oe_paper_oe": "oe_scratch_epoch_9.pt",
         "oe_paper_oe_tune": "oe_tune_epoch_4.pt"}


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def fixture_entries(**changes):
    """The three OE checkpoints as local-path external models (what external_model_sets: [oe_paper] downloads)."""
    entries = {name: {"path": str(OE_CHECKPOINTS / file), "sha256": _sha256(OE_CHECKPOINTS / file),
                      "architecture": "oe_convnet"} for name, file in NAMES.items()}
    for name, change in changes.items():
        entries[name].update(change)
    return entries


def tiny_config(tmp_path, entries):
    with open(os.path.join(ROOT, "presets", "tiny.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg.update(augment=["none"], oe=["baseline"], scores=["msp", "energy"], external_models=entries)
    path = tmp_path / "external.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@needs_oe_checkpoints
@pytest.mark.parametrize("change, says", [
    ({"sha256": "0" * 64}, "has sha256"),
    ({"architecture": "convnet"}, "does not load strictly into architecture 'convnet'"),
])
def test_a_wrong_checkpoint_stops_the_run_before_any_job_naming_the_model(tmp_path, change, says):
    result = run_snakemake(tmp_path, tiny_config(tmp_path, fixture_entries(oe_paper_oe=change)), "--cores", "1")
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "external model 'oe_paper_oe'" in message and says in message
    assert str(OE_CHECKPOINTS / "oe_scratch_epoch_9.pt") in message  # the file
    assert "external_models.oe_paper_oe" in message                  # the key to fix
    assert not (tmp_path / "results").exists()  # no job ran


@needs_oe_checkpoints
@pytest.mark.slow
def test_tiny_run_with_the_three_checkpoints_shows_their_columns_in_every_table(tmp_path):
    result = run_snakemake(tmp_path, tiny_config(tmp_path, fixture_entries()), "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    html = (tmp_path / "results" / "report.html").read_text()
    page = parse_page(html)
    labels = [f"{name} (not trained here)" for name in NAMES]
    per_model = [t for t in page.tables.values() if "Base" in t.header]
    assert {"study-auroc", "detection-auroc", "detection-fpr95"} <= {t for t, v in page.tables.items() if v in per_model}
    assert any(t.startswith("robustness") for t, v in page.tables.items() if v in per_model)
    for table in per_model:
        assert all(label in table.header for label in labels), table.header
    calibration = html.split('id="evaluation"')[1]
    assert all(label in calibration for label in labels)
    assert "Protocol full" in html
    assert all_problems(tmp_path, page) == []
    for name in NAMES:  # evaluated from the imported model file, MNIST-C included
        assert (tmp_path / "results" / "models" / "external" / name / "seed0" / "model.pt").exists()
        assert (tmp_path / "results" / "logits" / "external" / name / "seed0" / "mnistc_fog.npz").exists()
