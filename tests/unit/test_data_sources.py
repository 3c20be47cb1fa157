"""Real data sets in the config: registry and schema agree, the presets need no download,
bad sources are refused, leak marks follow the config, and an auxiliary set's training
split is subset (tests/workflow/test_data_workflow.py runs them through the workflow).
"""
import copy

import numpy as np
import pytest

from lib.config import ConfigError, load_schema, validate_config
from lib.data import registry as datasets
from lib.data.leaks import leaked_sets
from lib.data.real import REAL_DATASETS, load_real_dataset
from tests.helpers.fake_data import build_idx, serve
from tests.helpers.workflow_runs import resolved_config


def needed_sets(cfg):
    sets = {cfg["in_distribution"], *cfg["ood_sets"]}
    if any(o in ("oe", "oe_tune") for o in cfg["oe"]):
        sets.add(cfg["outlier_exposure"]["source"])
    return sets


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
    cfg = resolved_config("config.yaml")
    assert cfg["in_distribution"] == "mnist" and cfg["outlier_exposure"]["source"] == "tiny300k"
    assert cfg["ood_sets"] == ["fashion_mnist", "kmnist", "notmnist", "omniglot", "cifar10_gray",
                               "gaussian", "bernoulli", "blobs", "negated"]
    assert len(cfg["seeds"]) == 3 and cfg["train"]["epochs"] == 10 and cfg["train"]["model"] == "oe_convnet"
    assert cfg["offline"] is False and cfg["data_sources"] == {}

    seed = resolved_config("config.yaml", "presets/seed-study.yaml")
    assert seed["outlier_exposure"]["source"] == "fashion_mnist"
    assert seed["ood_sets"] == ["fashion_mnist", "kmnist"] and seed["scores"] == ["msp", "xent"]
    assert seed["outlier_exposure"]["lambda"] == cfg["outlier_exposure"]["lambda"]  # merged from config.yaml


@pytest.mark.parametrize("preset", ["presets/demo.yaml", "presets/tiny.yaml"])
def test_offline_presets_need_no_download_even_merged_over_the_real_default(preset):
    for cfg in (resolved_config(preset), resolved_config("config.yaml", preset)):
        assert not [n for n in needed_sets(cfg) if datasets.is_downloaded(n)]


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
    cfg = resolved_config("config.yaml", "presets/seed-study.yaml")
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
