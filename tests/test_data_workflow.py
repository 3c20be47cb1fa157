"""Real data sets in the workflow: registry and schema agree, leak marks, dry-run plans that
touch neither network nor disk, an offline run with a missing file, and an end-to-end run
on a real-format set served from 127.0.0.1."""
import copy
import gzip
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from snakemake.utils import update_config

from lib.data import registry as datasets
from lib.data.leaks import leaked_sets
from lib.config import ConfigError, load_schema, validate_config
from lib.data.real import REAL_DATASETS, load_real_dataset
from tests.test_real_data import build_idx, idx_bytes, mnist_like, serve
from tests.workflow import ROOT, SNAKEMAKE

FASHION_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def load_yaml(relpath):
    with open(os.path.join(ROOT, relpath)) as f:
        return yaml.safe_load(f)


def merged(*relpaths):
    """The config Snakemake builds from config.yaml and --configfile presets (dicts merged, lists replaced)."""
    cfg = {}
    for path in relpaths:
        update_config(cfg, load_yaml(path))
    return validate_config(cfg)


def needed_sets(cfg):
    sets = {cfg["in_distribution"], *cfg["ood_sets"]}
    if any(o in ("oe", "oe_tune") for o in cfg["oe"]):
        sets.add(cfg["outlier_exposure"]["source"])
    return sets


def network_isolation():
    """A command prefix that cuts the network off (a fresh network namespace), or []."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return ["unshare", "-n"] if ok else []


def snakemake(workdir, configfiles, *args, prefix=(), timeout=900):
    cmd = [*prefix, SNAKEMAKE, "--snakefile", os.path.join(ROOT, "Snakefile"), "-d", str(workdir),
           "--profile", os.path.join(ROOT, "profiles/local"),
           "--configfile", *[p if os.path.isabs(str(p)) else os.path.join(ROOT, p) for p in configfiles],
           *map(str, args)]
    # Any download that slipped through would go to a closed port instead of the internet.
    env = {**os.environ, "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "no_proxy": "127.0.0.1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def job_counts(stdout):
    """{rule: count} from the 'Job stats' table of a Snakemake run or dry run."""
    table = stdout.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) != "total"}


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


# ---- registry, schema, presets ---------------------------------------------------------

def test_one_registry_spans_generated_and_downloaded_sets():
    downloaded = {n for n in datasets.DATASETS if datasets.is_downloaded(n)}
    assert downloaded == set(REAL_DATASETS)
    for name in downloaded:
        assert REAL_DATASETS[name]["licence"] == datasets.DATASETS[name]["licence"]
        assert REAL_DATASETS[name]["splits"] == datasets.DATASETS[name]["splits"]
    for spec in datasets.DATASETS.values():
        assert spec["source"] and spec["licence"]
    with pytest.raises(ValueError, match="python -m lib.data.real prepare kmnist"):
        datasets.make_dataset("kmnist")


def test_schema_names_only_sets_the_registry_can_serve_in_that_role():
    props = load_schema()["properties"]
    registry = datasets.DATASETS

    def splits(name):
        return registry[name].get("splits", ("train", "test") if registry[name]["role"] == "in_distribution"
                                   else ("test",) if registry[name]["role"] == "ood" else ("train",))

    for name in props["in_distribution"]["enum"]:
        assert {"train", "test"} <= set(splits(name)), name
    for name in props["ood_sets"]["items"]["enum"]:
        assert "test" in splits(name), name
    for name in props["outlier_exposure"]["properties"]["source"]["enum"]:
        assert name in registry and (not datasets.is_downloaded(name) or "train" in splits(name)), name
    assert set(props["data_sources"]["propertyNames"]["enum"]) == set(REAL_DATASETS) | {"mnist_c"}
    assert {"mnist", "fashion_mnist", "kmnist"} <= set(props["in_distribution"]["enum"])
    assert {"notmnist", "omniglot", "cifar10_gray", "emnist_letters"} <= set(props["ood_sets"]["items"]["enum"])


def test_default_study_and_seed_study_presets():
    cfg = merged("config.yaml")
    assert cfg["in_distribution"] == "mnist" and cfg["outlier_exposure"]["source"] == "tiny300k"
    assert cfg["ood_sets"] == ["fashion_mnist", "kmnist", "notmnist", "omniglot", "cifar10_gray",
                               "gaussian", "bernoulli", "blobs", "negated"]
    assert len(cfg["seeds"]) == 3 and cfg["train"]["epochs"] == 10 and cfg["train"]["model"] == "oe_convnet"
    assert cfg["offline"] is False and cfg["data_sources"] == {}

    seed = merged("config.yaml", "presets/seed-study.yaml")
    assert seed["outlier_exposure"]["source"] == "fashion_mnist"
    assert seed["ood_sets"] == ["fashion_mnist", "kmnist"] and seed["scores"] == ["msp", "xent"]
    assert seed["outlier_exposure"]["lambda"] == cfg["outlier_exposure"]["lambda"]  # merged from config.yaml


@pytest.mark.parametrize("preset", ["presets/demo.yaml", "presets/tiny.yaml"])
def test_offline_presets_need_no_download_even_merged_over_the_real_default(preset):
    for cfg in (merged(preset), merged("config.yaml", preset)):
        assert not [n for n in needed_sets(cfg) if datasets.is_downloaded(n)]


def test_every_config_key_is_commented():
    with open(os.path.join(ROOT, "config.yaml")) as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    values = [line for line in lines if not line.rstrip().endswith(":")]  # section headers hold no value
    assert all("#" in line for line in values), [line for line in values if "#" not in line]
    for key in ("offline:", "data_sources:", "count:", "shares_source_with:"):
        assert any(line.lstrip().startswith(key) for line in lines), key


def test_config_rejects_bad_sources_and_an_oe_source_equal_to_the_training_set():
    base = {"in_distribution": "mnist"}
    with pytest.raises(ConfigError, match="'data_sources': 'mnistt' is not allowed"):
        validate_config({**base, "data_sources": {"mnistt": {}}})
    with pytest.raises(ConfigError, match="data_sources.kmnist.mirror"):
        validate_config({**base, "data_sources": {"kmnist": {"mirror": "http://x/"}}})
    with pytest.raises(ConfigError, match=r"data_sources.kmnist.md5.a.*expected form"):
        validate_config({**base, "data_sources": {"kmnist": {"md5": {"a": "not-hex"}}}})
    with pytest.raises(ConfigError, match="'outlier_exposure.source': 'omniglot' is not allowed"):
        validate_config({**base, "outlier_exposure": {"source": "omniglot"}})  # test split only
    with pytest.raises(ConfigError, match="outlier_exposure.source.*in-distribution"):
        validate_config({"in_distribution": "fashion_mnist", "outlier_exposure": {"source": "fashion_mnist"}})
    ok = validate_config({**base, "offline": True, "outlier_exposure": {"source": "tiny300k", "count": 5000},
                          "data_sources": {"tiny300k": {"sha256": {"300K_random_images.npy": "a" * 64}},
                                           "mnist_c": {"url": "http://mirror/"}}})
    assert ok["offline"] is True and ok["outlier_exposure"]["count"] == 5000


# ---- leak marks ------------------------------------------------------------------------

def cfg_with(**changes):
    cfg = merged("config.yaml", "presets/seed-study.yaml")
    for key, value in changes.items():
        target = cfg
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        target[last] = copy.deepcopy(value)
    return cfg


def test_leaks_follow_the_oe_source_and_only_with_an_oe_model():
    leaks = leaked_sets(cfg_with())
    assert list(leaks) == ["fashion_mnist"] and "Outlier-Exposure set fashion_mnist" in leaks["fashion_mnist"]
    assert leaked_sets(cfg_with(oe=["baseline"])) == {}
    assert leaked_sets(cfg_with(**{"outlier_exposure.source": "jigsaw"})) == {}
    # Same collection under another name: CIFAR-10 and the 300K images both come from 80M Tiny Images.
    leaks = leaked_sets(cfg_with(**{"outlier_exposure.source": "tiny300k",
                                             "ood_sets": ["cifar10_gray", "kmnist", "gaussian"]}))
    assert list(leaks) == ["cifar10_gray"] and "80 Million Tiny Images" in leaks["cifar10_gray"]
    leaks = leaked_sets(cfg_with(**{"outlier_exposure.source": "gaussian",
                                             "ood_sets": ["gaussian", "bernoulli"]}))
    assert list(leaks) == ["gaussian"]


def test_leaks_follow_a_pixmix_mixing_folder_only_when_pixmix_trains_on_it(tmp_path):
    cfg = cfg_with(**{"outlier_exposure.source": "jigsaw", "ood_sets": ["kmnist", "cifar10_gray"],
                      "augment": ["none", "saltpepper"],
                      "pixmix.mixing": {"source": "folder", "folder": str(tmp_path), "count": 10, "seed": 0,
                                        "shares_source_with": ["cifar10_gray"]}})
    assert leaked_sets(cfg) == {}  # no pixmix model in the grid
    cfg["augment"] = ["none", "pixmix"]
    assert list(leaked_sets(cfg)) == ["cifar10_gray"]
    cfg["pixmix"]["mixing"]["source"] = "fractals"
    assert leaked_sets(cfg) == {}


def test_report_labels_and_footnote_mark_leaked_rows():
    from lib.report import cells as report
    leaks = {"fashion_mnist": "shares its source (Fashion-MNIST) with the Outlier-Exposure set fashion_mnist"}
    assert report.set_label("fashion_mnist", leaks) == f"fashion_mnist {report.LEAK_MARK}"
    assert report.set_label("kmnist", leaks) == "kmnist"


# ---- the subset of an auxiliary set ----------------------------------------------------

def test_train_count_subsets_only_the_training_split(http_server, tmp_path):
    from lib.data.real import fetch_dataset
    files, expect = build_idx(np.random.default_rng(11))
    sources = serve(http_server, "fashion_mnist", files)
    fetch_dataset("fashion_mnist", tmp_path, sources=sources, wait_s=0, progress=False)
    arrays = load_real_dataset("fashion_mnist", tmp_path, sources, train_count=4, seed=3)
    assert len(arrays["x_train"]) == 4 and len(arrays["y_train"]) == 4
    np.testing.assert_array_equal(arrays["x_test"], expect["x_test"])
    rows = [np.flatnonzero((expect["x_train"] == img).all(axis=(1, 2)))[0] for img in arrays["x_train"]]
    assert len(set(rows)) == 4
    np.testing.assert_array_equal(arrays["y_train"], expect["y_train"][rows])


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
    cfg = merged(*presets)
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


def write_config(path, **cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_offline_run_with_a_missing_file_lists_what_to_stage_and_writes_no_data(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    extra = write_config(tmp_path / "offline.yaml", in_distribution="fashion_mnist", ood_sets=["gaussian"],
                         offline=True, synthetic_size=50, data_dir=str(tmp_path / "staged"),
                         # Not the system copy this machine may have: the run must find nothing.
                         data_sources={"fashion_mnist": {"system_dir": None}})
    result = snakemake(workdir, ["presets/tiny.yaml", extra], prefix=network_isolation())
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
    # One augmentation, with and without OE: two models keep the run short.
    extra = write_config(tmp_path / "served.yaml", augment=["none"], ood_sets=["gaussian", "fashion_mnist"],
                         outlier_exposure={"source": "fashion_mnist", "count": 60},
                         data_dir=str(tmp_path / "data"), data_sources=sources)
    result = snakemake(workdir, ["presets/tiny.yaml", extra])
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
    again = snakemake(workdir, ["presets/tiny.yaml", extra], "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
