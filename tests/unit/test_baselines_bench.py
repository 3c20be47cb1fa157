"""benchmarks/baselines.py: the sample's data_sources pin, and one short run of the command
on the demo's digits (no real data needed) with an OE pair in both outlier settings."""
import json

import pytest

from benchmarks.baselines import main, sample_sources
from tests.helpers.shared_fixtures import MNIST_SAMPLE, needs_mnist_sample


def test_the_pin_unsets_torchvisions_md5s_and_pins_every_sha256(tmp_path):
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    (tmp_path / "SHA256SUMS").write_text("".join(f"{i:064x}  {name}\n" for i, name in enumerate(names)))
    pin = sample_sources(tmp_path)["mnist"]
    assert pin["md5"] == {name: None for name in names}
    assert pin["sha256"] == {name: f"{i:064x}" for i, name in enumerate(names)}


@needs_mnist_sample
def test_the_pin_matches_the_shared_sample():
    assert len(sample_sources(MNIST_SAMPLE)["mnist"]["sha256"]) == 4


def test_a_short_run_gives_one_row_per_model_run_and_outlier_setting(tmp_path, capsys):
    out = tmp_path / "result.json"
    result = main(["--id", "digits", "--models", "oe_convnet", "--runs", "none/baseline,saltpepper/oe",
                   "--augment-outliers", "true,false", "--epochs", "1", "--seeds", "1", "--noise-size", "50",
                   "--data-dir", str(tmp_path / "data"), "--out", str(out)])
    keys = [(r["run"], r["augment_outliers"]) for r in result["rows"]]
    assert keys == [("none/baseline", True), ("saltpepper/oe", True), ("saltpepper/oe", False)]
    for row in result["rows"]:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["mnist_c_mean"] <= 1 and len(row["mnist_c"]) == 15
        assert all(0 <= row[f"auroc_{name}"] <= 1 for name in ("gaussian", "bernoulli", "uniform", "blobs"))
    assert result["train"]["epochs"] == 1 and result["ood_sizes"]["gaussian"] == 50
    assert json.loads(out.read_text())["rows"][0]["model"] == "oe_convnet"
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| oe_convnet")]
    assert [line.split(" | ")[2] for line in table] == ["—", "yes", "no"]
