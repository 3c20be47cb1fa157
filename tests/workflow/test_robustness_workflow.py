"""MNIST-C through the real workflow: the official zip from a local server (as a cluster user
fetches it), its checksum and truncation errors, offline staging, and the generated sets'
tables and report section in the shared tiny study."""
import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from lib.data.mnist_c import CORRUPTIONS
from tests.helpers.fake_data import mnist_c_zip
from tests.helpers.report_page import parse_page
from tests.helpers.workflow_runs import run_snakemake, study_config

pytestmark = pytest.mark.slow

TARGETS = [f"results/data/corruptions/{c}.npz" for c in CORRUPTIONS]
ZIP_PATH = "zenodo/record/files/mnist_c.zip"


@pytest.fixture(scope="module")
def official():
    """(zip bytes, arrays per corruption, labels): the real layout and sizes, served locally."""
    return mnist_c_zip()


def official_config(tmp_path, http_server, md5, **overrides):
    # the official sets are MNIST digits: the config must say in_distribution mnist, though
    # these runs build only the corruption files and download no MNIST
    sources = {"mnist_c": {"url": http_server.url("zenodo/record/files/"), "md5": {"mnist_c.zip": md5}}}
    return study_config(tmp_path / "study.yaml", in_distribution="mnist", corruptions="official", data_dir="data",
                        data_sources=sources, **overrides)


def output_of(result):
    return result.stdout + result.stderr


def assert_nothing_extracted(workdir):
    folder = workdir / "results" / "data" / "corruptions"
    assert not folder.exists() or list(folder.iterdir()) == []
    assert not (workdir / "results" / "data" / "fetched" / "mnist_c.json").exists()


def test_official_zip_is_fetched_once_checked_and_extracted(http_server, tmp_path, official):
    body, arrays, labels = official
    http_server.files[ZIP_PATH] = body
    config = official_config(tmp_path, http_server, hashlib.md5(body).hexdigest())
    workdir = tmp_path / "run"

    result = run_snakemake(workdir, config, "--cores", "1", *TARGETS)
    assert result.returncode == 0, output_of(result)[-3000:]
    assert http_server.hits[ZIP_PATH] == 1
    assert (workdir / "data" / "mnist_c.zip").read_bytes() == body
    for c in CORRUPTIONS:
        with np.load(workdir / "results" / "data" / "corruptions" / f"{c}.npz") as saved:
            np.testing.assert_array_equal(saved["x_test"], arrays[c][..., 0])
            np.testing.assert_array_equal(saved["y_test"], labels)

    # The zip in data_dir is reused: the fetch job, run again for a fresh record, downloads nothing.
    (workdir / "results" / "data" / "fetched" / "mnist_c.json").unlink()
    result = run_snakemake(workdir, config, "--cores", "1", "results/data/fetched/mnist_c.json", *TARGETS)
    assert result.returncode == 0, output_of(result)[-3000:]
    assert "fetch_mnist_c" in output_of(result)
    assert http_server.hits[ZIP_PATH] == 1

    # The evaluate jobs read every corruption set; nothing is fetched again.
    plan = run_snakemake(workdir, config, "-n")
    assert plan.returncode == 0, output_of(plan)[-3000:]
    assert "fetch_mnist_c" not in output_of(plan)
    assert re.search(r"^evaluate\s+4$", output_of(plan), re.M)


def test_wrong_checksum_is_retried_once_then_names_file_md5_and_staging(http_server, tmp_path, official):
    body = official[0]
    http_server.files[ZIP_PATH] = body
    expected = hashlib.md5(b"not the archive").hexdigest()
    workdir = tmp_path / "run"
    result = run_snakemake(workdir, official_config(tmp_path, http_server, expected), "--cores", "1", *TARGETS)
    assert result.returncode != 0
    output = output_of(result)
    assert "data/mnist_c.zip" in output and expected in output and "stage it by hand" in output
    assert hashlib.md5(body).hexdigest() in output  # what arrived, beside what was expected
    assert http_server.hits[ZIP_PATH] == 2
    assert not (workdir / "data" / "mnist_c.zip").exists()
    assert_nothing_extracted(workdir)


def test_truncated_download_is_retried_once_then_reported(http_server, tmp_path, official):
    body = official[0]
    http_server.files[ZIP_PATH] = body
    http_server.truncate[ZIP_PATH] = -1
    md5 = hashlib.md5(body).hexdigest()
    workdir = tmp_path / "run"
    result = run_snakemake(workdir, official_config(tmp_path, http_server, md5), "--cores", "1", *TARGETS)
    assert result.returncode != 0
    output = output_of(result)
    assert "truncated" in output and "data/mnist_c.zip" in output and md5 in output
    assert http_server.hits[ZIP_PATH] == 2
    assert not (workdir / "data" / "mnist_c.zip").exists()
    assert_nothing_extracted(workdir)


def test_offline_uses_only_a_zip_staged_by_hand(http_server, tmp_path, official):
    body = official[0]
    http_server.files[ZIP_PATH] = body
    md5 = hashlib.md5(body).hexdigest()
    config = official_config(tmp_path, http_server, md5, offline=True)
    workdir = tmp_path / "run"

    result = run_snakemake(workdir, config, "--cores", "1", *TARGETS)
    assert result.returncode != 0
    output = output_of(result)
    assert "data/mnist_c.zip is missing and offline mode is on" in output
    assert http_server.url(ZIP_PATH) in output and md5 in output
    assert_nothing_extracted(workdir)

    staged = workdir / "data" / "mnist_c.zip"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(body[: len(body) // 2])  # a copy cut short
    result = run_snakemake(workdir, config, "--cores", "1", *TARGETS)
    assert result.returncode != 0
    assert "data/mnist_c.zip" in output_of(result) and md5 in output_of(result)
    assert_nothing_extracted(workdir)

    staged.write_bytes(body)
    result = run_snakemake(workdir, config, "--cores", "1", *TARGETS)
    assert result.returncode == 0, output_of(result)[-3000:]
    assert len(list((workdir / "results" / "data" / "corruptions").iterdir())) == 15
    assert sum(http_server.hits.values()) == 0


def test_tiny_generated_study_reports_robustness_per_corruption(tiny_study):
    # The shared tiny run (corruptions: generated): four models, none and saltpepper, each without
    # and with OE; the study tables show the two without OE.
    results = tiny_study / "results"

    long = pd.read_csv(results / "tables" / "robustness.csv", keep_default_na=False)
    assert list(long.columns) == ["augment", "oe", "seed", "metric", "set", "score", "value", "source"]
    assert len(long) == 4 * 15 and set(long["set"]) == set(CORRUPTIONS) and set(long["metric"]) == {"accuracy"}
    assert long["value"].between(0, 1).all()
    summary = pd.read_csv(results / "tables" / "robustness_summary.csv", keep_default_na=False)
    assert sorted(summary["metric"]) == sorted(["mean_accuracy", "non_overlap_mean", "mce"] * 4)
    baseline = summary["oe"] == "baseline"
    base_mce = summary[(summary["augment"] == "none") & baseline & (summary["metric"] == "mce")]["value"]
    assert base_mce.tolist() == [pytest.approx(1.0)]

    with np.load(results / "logits" / "saltpepper" / "baseline" / "seed1" / "mnistc_fog.npz") as logits:
        assert sorted(logits.files) == ["labels", "logits"]  # no features for the 15 MNIST-C sets
    with np.load(results / "logits" / "saltpepper" / "baseline" / "seed1" / "id_test.npz") as logits:
        assert "features" in logits.files
    with np.load(results / "data" / "corruptions" / "stripe.npz") as stripe, \
            np.load(results / "data" / "digits.npz") as digits:
        np.testing.assert_array_equal(stripe["x_test"][:, :, :7], 255 - digits["x_test"][:, :, :7])

    html = (results / "report.html").read_text()
    page = parse_page(html)
    study_labels = page.tables["study-accuracy"].labels()
    row = study_labels.index(next(label for label in study_labels if label.startswith("MNIST-C accuracy")))
    mnist_c_cells = page.tables["study-accuracy"].value_cells()[2 * row: 2 * row + 2]
    number = re.compile(r"^\d+\.\d\d \(n=1\)$")
    for cell, augment in zip(mnist_c_cells, ("none", "saltpepper")):
        assert number.match(cell.text), cell.text
        assert cell.attrs["data-source"] == "results/tables/robustness_summary.csv"
        expected = summary[(summary["augment"] == augment) & baseline & (summary["metric"] == "mean_accuracy")]["value"]
        assert float(cell.attrs["data-value"]) == pytest.approx(expected.iloc[0])

    assert page.tables["robustness-table"].labels()[:15] == list(CORRUPTIONS)
    cells = page.tables["robustness-table"].value_cells()
    assert len(cells) == 18 * 4 and all(re.match(r"^\d+\.\d\d( ‡)?$", c.text) for c in cells)
    impulse = cells[4 * CORRUPTIONS.index("impulse_noise"): 4 * CORRUPTIONS.index("impulse_noise") + 4]
    assert [c.attrs.get("class") for c in impulse] == [None, None, "overlap", "overlap"]
    assert impulse[2].text.endswith("‡") and impulse[3].text.endswith("‡")
    section = html.split('<h2 id="robustness">')[1].split("<h2")[0]
    assert section.count('src="data:image/png;base64,') == 2 and "http" not in section
