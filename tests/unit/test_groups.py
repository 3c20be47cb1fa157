"""Near/far OOD groups, their means, full-spectrum detection and the score rankings per group."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from lib.common import save_npz_atomic
from lib.data.mnist_c import CORRUPTIONS
from lib.data.registry import DATASETS, OOD_GROUPS, config_problems_with_data, ood_group_problems, ood_groups
from lib.data.shifted import shifted_test_set
from lib.evaluate.aggregate import COLUMNS, full_spectrum_rows, summarize
from lib.evaluate.full_spectrum import full_spectrum_job, full_spectrum_metrics
from lib.evaluate.groups import group_means
from lib.evaluate.ranks import rank_tables
from lib.evaluate.scores import msp_score


def test_every_set_that_can_be_an_ood_set_has_a_group_after_openood():
    for name, spec in DATASETS.items():
        if spec["role"] == "ood":
            assert spec["group"] in OOD_GROUPS, name
    groups = ood_groups({"ood_sets": ["fashion_mnist", "notmnist", "kmnist", "omniglot", "emnist_letters",
                                      "cifar10_gray", "gaussian", "bernoulli", "blobs", "negated", "photos"]})
    assert [n for n, g in groups.items() if g == "near"] == ["fashion_mnist", "notmnist", "kmnist", "omniglot",
                                                               "emnist_letters"]
    assert list(groups) == ["fashion_mnist", "notmnist", "kmnist", "omniglot", "emnist_letters", "cifar10_gray",
                            "gaussian", "bernoulli", "blobs", "negated", "photos"]


def test_the_config_overrides_a_group():
    cfg = {"ood_sets": ["gaussian", "negated", "kmnist"], "ood_groups": {"negated": "near", "kmnist": "far"}}
    assert ood_groups(cfg) == {"gaussian": "far", "negated": "near", "kmnist": "far"}
    assert ood_group_problems(cfg) == []


def test_an_unknown_set_or_group_is_refused_with_its_key():
    cfg = {"in_distribution": "digits", "train": {"batch_size": 8, "val_fraction": 0.1}, "ood_sets": ["gaussian"],
           "ood_groups": {"gausian": "far", "negated": "middle", "digits": "near"}}
    problems = config_problems_with_data(cfg)
    assert len(problems) == 3
    assert "'gausian' is not an OOD set of the registry" in problems[0] and "allowed: " in problems[0]
    assert "'ood_groups.negated': 'middle' is not an OOD group; allowed: near, far" in problems[1]
    assert "'digits' is not an OOD set" in problems[2]
    with pytest.raises(ValueError, match="gausian"):
        ood_groups(cfg)


def test_a_registered_set_without_a_group_is_named(monkeypatch):
    monkeypatch.setitem(DATASETS, "squares", dict(make=None, role="ood", needs_id=False))
    [problem] = ood_group_problems({"ood_sets": ["squares"]})
    assert "'squares' has no group" in problem and "squares: near" in problem
    assert ood_group_problems({"ood_sets": ["squares"], "ood_groups": {"squares": "far"}}) == []
    assert ood_groups({"ood_sets": ["squares", "gaussian"], "ood_groups": {"squares": "near"}}) == \
        {"squares": "near", "gaussian": "far"}


def _long(rows):
    return pd.DataFrame([dict(zip(COLUMNS, r)) for r in rows], columns=COLUMNS)


def test_group_means_by_hand():
    groups = {"fashion_mnist": "near", "kmnist": "near", "gaussian": "far"}
    rows = []
    values = {("fashion_mnist", 1): 0.80, ("kmnist", 1): 0.90, ("gaussian", 1): 0.99,
              ("fashion_mnist", 2): 0.70, ("kmnist", 2): 0.96, ("gaussian", 2): 0.97}
    for (ood, seed), v in values.items():
        rows.append(("none", "baseline", seed, "auroc", ood, "msp", v, "x.json"))
        rows.append(("none", "baseline", seed, "n_id", ood, "msp", 100, "x.json"))
    # a model with kmnist missing gets no near mean (it would average other sets than the others)
    rows.append(("pixmix", "baseline", 1, "auroc", "fashion_mnist", "msp", 0.5, "y.json"))
    means = group_means(_long(rows), groups, "results/tables/detection.csv")
    assert list(means.columns) == COLUMNS and set(means["metric"]) == {"auroc"}
    assert (means["source"] == "results/tables/detection.csv").all()
    near = means[(means["set"] == "near") & (means["augment"] == "none")].set_index("seed")["value"]
    assert near[1] == pytest.approx(0.85) and near[2] == pytest.approx(0.83)
    assert not ((means["augment"] == "pixmix") & (means["set"] == "near")).any()
    cell = summarize(means).set_index(["augment", "set"]).loc[("none", "near")]
    # mean ± std over seeds of the per-seed group means, as the per-set cells are summarised
    assert cell["mean"] == pytest.approx(0.84) and cell["std"] == pytest.approx(np.std([0.85, 0.83], ddof=1))
    assert cell["n"] == 2


def test_full_spectrum_auroc_is_sklearn_on_the_concatenated_scores():
    rng = np.random.default_rng(0)
    clean, shifted, ood = rng.normal(0, 1, 50), rng.normal(0.7, 1, 40), rng.normal(1.5, 1, 30)
    m = full_spectrum_metrics(clean, shifted, ood)
    labels = np.r_[np.zeros(90), np.ones(30)]
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, np.r_[clean, shifted, ood]))
    assert m["n_id"] == 90 and m["n_ood"] == 30 and m["n_shifted"] == 40


def test_full_spectrum_fpr95_by_hand():
    # 20 OOD at 10..29: 95% caught at threshold 11. ID: 2 clean above it (12, 30), shifted 1 of 2 (15)
    ood = np.arange(10, 30, dtype=float)
    m = full_spectrum_metrics([0.0, 12.0, 30.0, 1.0], [15.0, 2.0], ood)
    assert m["fpr95"] == pytest.approx(3 / 6)
    # the covariate shift costs: without the shifted images it is 2 of 4
    assert full_spectrum_metrics([0.0, 12.0, 30.0, 1.0], [], ood)["fpr95"] == pytest.approx(2 / 4)


def test_shifted_set_holds_each_test_image_once_and_every_corruption_alike():
    n = 47
    corrupted = {c: {"x_test": np.full((n, 28, 28), k, np.uint8),
                     "y_test": np.arange(n, dtype=np.int64) % 10} for k, c in enumerate(CORRUPTIONS)}
    out = shifted_test_set(corrupted, seed=3)
    assert out["x_test"].shape == (n, 28, 28) and out["x_test"].dtype == np.uint8
    assert (out["y_test"] == np.arange(n) % 10).all()  # image i keeps its label: each test image once
    assert (out["x_test"][:, 0, 0] == out["corruption"]).all()
    counts = np.bincount(out["corruption"], minlength=15)
    assert counts.max() - counts.min() <= 1 and counts.sum() == n
    assert (shifted_test_set(corrupted, seed=3)["corruption"] == out["corruption"]).all()
    with pytest.raises(ValueError, match="differ in size"):
        shifted_test_set({**corrupted, "fog": {"x_test": corrupted["fog"]["x_test"][:5],
                                               "y_test": corrupted["fog"]["y_test"][:5]}}, seed=3)


def test_full_spectrum_job_uses_the_score_jobs_id_and_ood_scores(tmp_path):
    logits = np.array([[3.0, 0.0], [0.0, 0.5], [1.0, 1.0]], np.float32)
    save_npz_atomic(tmp_path / "id_shifted.npz", logits=logits, labels=np.zeros(3, np.int64))
    save_npz_atomic(tmp_path / "stats.npz", class_means=np.zeros((2, 2)), precision=np.eye(2))
    save_npz_atomic(tmp_path / "msp.npz", id_scores=np.array([-0.9, -0.8]), ood_scores=np.array([-0.6, -0.5, -0.55]))
    out = tmp_path / "fs.json"
    full_spectrum_job(str(tmp_path / "id_shifted.npz"), [str(tmp_path / "stats.npz")],
                      {("gaussian", "msp"): str(tmp_path / "msp.npz")}, str(out), str(tmp_path / "fs.log"),
                      augment="none", oe="baseline", seed=1)
    [record] = json.loads(out.read_text())
    shifted = msp_score(logits)
    expected = roc_auc_score(np.r_[np.zeros(5), np.ones(3)], np.r_[-0.9, -0.8, shifted, -0.6, -0.5, -0.55])
    assert record["auroc"] == pytest.approx(expected) and record["n_id"] == 5 and record["n_shifted"] == 3
    rows = pd.DataFrame(full_spectrum_rows([str(out)]))
    assert set(rows["metric"]) >= {"auroc", "fpr95", "n_shifted"} and (rows["set"] == "gaussian").all()


def test_scores_ranked_per_group_by_hand():
    # AUROC per set (one model, one seed): msp wins on the near sets, energy on the far ones
    auroc = {("fashion_mnist", "msp"): 0.9, ("fashion_mnist", "energy"): 0.8, ("fashion_mnist", "odin"): 0.7,
             ("kmnist", "msp"): 0.85, ("kmnist", "energy"): 0.7, ("kmnist", "odin"): 0.75,
             ("gaussian", "msp"): 0.9, ("gaussian", "energy"): 0.99, ("gaussian", "odin"): 0.95,
             ("blobs", "msp"): 0.8, ("blobs", "energy"): 0.9, ("blobs", "odin"): 0.9}
    det = _long([("none", "baseline", 1, "auroc", s, score, v, "x") for (s, score), v in auroc.items()])
    groups = {"fashion_mnist": "near", "kmnist": "near", "gaussian": "far", "blobs": "far"}
    fs = det.assign(value=det["value"] - 0.1)
    df = rank_tables({"detection": (det, "d.csv"), "full_spectrum": (fs, "f.csv")}, groups=groups)
    rank = df.set_index(["comparison", "item"])["mean_rank"]
    # near: msp 1, 1; energy 2, 3; odin 3, 2 -> 1, 2.5, 2.5
    assert [rank[("scores_near", s)] for s in ("msp", "energy", "odin")] == [1.0, 2.5, 2.5]
    # far: msp 3, 3; energy 1, 1.5 (tie with odin); odin 2, 1.5 -> 3, 1.25, 1.75
    assert [rank[("scores_far", s)] for s in ("msp", "energy", "odin")] == [3.0, 1.25, 1.75]
    assert rank[("scores_ood", "msp")] == pytest.approx(2.0)
    assert [rank[("scores_full_spectrum", s)] for s in ("msp", "energy", "odin")] == \
        [rank[("scores_ood", s)] for s in ("msp", "energy", "odin")]
    assert df.set_index(["comparison", "item"])["n_blocks"][("scores_near", "msp")] == 2
    # without groups, no group comparison
    assert not rank_tables({"detection": (det, "d.csv")})["comparison"].isin(["scores_near", "scores_far"]).any()


def test_report_ranking_lists_the_scores_best_first_and_names_each_winner():
    from lib.report.detection import ranking

    auroc = {("fashion_mnist", "msp"): 0.9, ("fashion_mnist", "energy"): 0.8,
             ("gaussian", "msp"): 0.9, ("gaussian", "energy"): 0.99, ("blobs", "msp"): 0.7, ("blobs", "energy"): 0.95}
    det = _long([("none", "baseline", 1, "auroc", s, score, v, "x") for (s, score), v in auroc.items()])
    ranks = rank_tables({"detection": (det, "d.csv")},
                        groups={"fashion_mnist": "near", "gaussian": "far", "blobs": "far"})
    table = ranking(ranks, "results/tables/ranks.csv")
    assert [r["label"] for r in table["rows"]] == ["energy", "MSP"]  # energy: ranks 2, 1, 1 -> 1.33
    assert [(w["column"], w["score"]) for w in table["winners"]] == [
        ("all OOD sets", "energy"), ("near-OOD", "MSP"), ("far-OOD", "energy")]
    assert table["header"][:2] == ["rank, all OOD sets", "AUROC %, all OOD sets"]  # no full-spectrum table: no column
    assert table["blocks"] == {"all OOD sets": 3, "near-OOD": 1, "far-OOD": 2}
    msp_near = table["rows"][1]["cells"][2]
    assert msp_near["key"] == "comparison=scores_near;item=msp;column=mean_rank" and msp_near["text"] == "1.00"
    assert ranking(ranks.iloc[0:0], "x") is None and ranking(None, "x") is None
