"""Real data sets in the workflow: dry-run plans that touch neither network nor disk, an
offline run with a missing file, and an end-to-end run on a real-format set served from
127.0.0.1 (tests/unit/test_data_sources.py checks the registry, schema and leak marks)."""
import json
import os
import re
import subprocess

import numpy as np
import pytest

from tests.helpers.fake_data import idx_bytes, mnist_like, serve
from tests.helpers.faults import files_under
from tests.helpers.workflow_runs import job_counts, resolved_config, run_snakemake, study_config

FASHION_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
# Any download that slipped through would go to a closed port instead of the internet.
CLOSED_PROXY = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": "127.0.0.1"}


def network_isolation():
    """A command prefix that cuts the network off (a fresh network namespace), or []."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return ["unshare", "-n"] if ok else []


def snakemake(workdir, configfiles, *args, prefix=()):
    return run_snakemake(workdir, configfiles, *args, env=CLOSED_PROXY, prefix=prefix)


# ---- the workflow ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("presets, real, generated", [
    (["config.yaml"], {"mnist", "fashion_mnist", "kmnist", "notmnist", "omniglot", "cifar10_gray", "tiny300k"},
     {"gaussian", "bernoulli", "blobs", "negated"}),
    (["config.yaml", "presets/seed-study.yaml"], {"mnist", "fashion_mnist", "kmnist"}, set()),
])
def test_dry_run_plans_the_real_study_without_network_or_data(tmp_path, presets, real, generated):
    workdir, data_dir = tmp_path / "run", tmp_path / "empty_data"
    workdir.mkdir()
    result = snakemake(workdir, presets, "-n", "--config", f"data_dir={data_dir}", prefix=network_isolation())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cfg = resolved_config(*presets)
    counts = job_counts(result.stdout)
    n_models = len(cfg["augment"]) * len(cfg["oe"]) * len(cfg["seeds"])
    assert counts["fetch_real_dataset"] == len(real) and counts["prepare_real_dataset"] == len(real)
    assert counts.get("prepare_dataset", 0) == len(generated)
    assert counts["train"] == n_models and counts["leak_marks"] == 1
    for name in real:
        assert f"results/data/fetched/{name}.json" in result.stdout
    # Planning fetched nothing and wrote nothing but Snakemake's own bookkeeping.
    assert not data_dir.exists()
    assert sorted(os.listdir(workdir)) == [".snakemake"]


@pytest.mark.slow
def test_offline_run_with_a_missing_file_lists_what_to_stage_and_writes_no_data(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = study_config(tmp_path / "offline.yaml", in_distribution="fashion_mnist", ood_sets=["gaussian"],
                         offline=True, synthetic_size=50, data_dir=str(tmp_path / "staged"),
                         # Not the system copy this machine may have: the run must find nothing.
                         data_sources={"fashion_mnist": {"system_dir": None}})
    result = snakemake(workdir, [config], prefix=network_isolation())
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "offline mode: 4 of 4 file(s) of data set 'fashion_mnist' are missing" in out
    for filename in FASHION_FILES:
        assert f"FashionMNIST/raw/{filename}" in out
        assert f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{filename}" in out
    assert not (tmp_path / "staged").exists()
    data = workdir / "results/data"
    left = files_under(data) if data.exists() else []
    # Only complete outputs of jobs that did not need the missing set (here the gaussian set).
    assert set(left) <= {"gaussian.npz"}, left
    assert not (workdir / "results/models").exists() and not (workdir / "results/report.html").exists()


def small_fashion(rng, n_train=120, n_test=40):
    x_tr, x_te = mnist_like(n_train, rng), mnist_like(n_test, rng)
    y_tr, y_te = rng.integers(0, 10, n_train).astype(np.uint8), rng.integers(0, 10, n_test).astype(np.uint8)
    files = dict(zip(FASHION_FILES, map(idx_bytes, (x_tr, y_tr, x_te, y_te))))
    return files, {"x_train": x_tr, "x_test": x_te, "y_test": y_te}


@pytest.mark.slow
def test_end_to_end_with_a_served_real_set_as_oe_source_and_ood_set(http_server, tmp_path):
    files, expect = small_fashion(np.random.default_rng(5))
    sources = serve(http_server, "fashion_mnist", files)
    workdir = tmp_path / "run"
    workdir.mkdir()
    # One augmentation, with and without OE, and two scores: two models keep the run short.
    config = study_config(tmp_path / "served.yaml", augment=["none"], ood_sets=["gaussian", "fashion_mnist"],
                         scores=["msp", "energy"],
                         outlier_exposure={"source": "fashion_mnist", "count": 60},
                         data_dir=str(tmp_path / "data"), data_sources=sources)
    result = snakemake(workdir, [config])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert all(http_server.hits[f"fashion_mnist/{f}"] == 1 for f in files)
    assert sorted(os.listdir(tmp_path / "data/FashionMNIST/raw")) == sorted(FASHION_FILES)

    with np.load(workdir / "results/data/fashion_mnist.npz") as npz:
        assert npz["x_train"].shape == (60, 28, 28)  # outlier_exposure.count: the OE subset
        np.testing.assert_array_equal(npz["x_test"], expect["x_test"])  # the test split stays whole
    record = json.loads((workdir / "results/data/fetched/fashion_mnist.json").read_text())
    assert record["dataset"] == "fashion_mnist" and sorted(record["files"]) == sorted(
        ["train_images", "train_labels", "test_images", "test_labels"])

    leaks = json.loads((workdir / "results/tables/leaks.json").read_text())["seen_in_training"]
    assert list(leaks) == ["fashion_mnist"]
    html = (workdir / "results/report.html").read_text()
    # Every result row of the set carries the mark (provenance lists its files, unmarked). Row
    # labels are <th scope="row"> in the report's own tables, <td> in plug-in sections' tables.
    results_part = html.split('data-section="provenance"')[0]
    labels = re.findall(r"<tr><t[dh][^>]*>((?:fashion_mnist|gaussian)\b[^<]*)</t[dh]>", results_part)
    marked = [label for label in labels if label.startswith("fashion_mnist \u2020")]
    assert len(marked) > 4 and all(label.startswith(("fashion_mnist \u2020", "gaussian")) for label in labels)
    assert not any("\u2020" in label for label in labels if label.startswith("gaussian"))
    # The study's AUROC table, the detection tables and the evaluation section each explain the mark once.
    assert html.count('class="note leak-note"') == 3
    detection = json.load(open(next((workdir / "results/scores").rglob("fashion_mnist/msp.json"))))
    assert detection["n_ood"] == len(expect["x_test"])

    # A second plan has nothing to do: the fetch records and converted sets are up to date.
    again = snakemake(workdir, [config], "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
