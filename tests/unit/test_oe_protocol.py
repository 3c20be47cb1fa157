"""The oe_paper evaluation protocol (lib.evaluate.detection) and the authors' FPR95 variant."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from lib.common import save_npz_atomic
from lib.evaluate.detection import detection_record, drawn_metrics, ood_draws
from lib.evaluate.metrics import fpr_at_95_tpr, fpr_at_recall_nearest_95


def test_draws_are_ten_seeded_fifths_of_the_id_size_without_replacement():
    draws = ood_draws(n_id=1000, n_ood=3000, draws=10, ood_fraction=0.2, seed=7)
    assert len(draws) == 10
    assert all(len(d) == 200 and len(set(d.tolist())) == 200 and d.max() < 3000 for d in draws)
    assert len({tuple(d) for d in draws}) == 10  # different images each draw
    again = ood_draws(n_id=1000, n_ood=3000, draws=10, ood_fraction=0.2, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(draws, again))
    other = ood_draws(n_id=1000, n_ood=3000, draws=10, ood_fraction=0.2, seed=8)
    assert not np.array_equal(draws[0], other[0])


def test_a_set_smaller_than_the_draw_is_used_whole():
    assert all(len(d) == 50 for d in ood_draws(n_id=1000, n_ood=50, draws=3, ood_fraction=0.2, seed=0))


def test_mean_over_draws_equals_the_per_draw_metrics_by_hand():
    rng = np.random.default_rng(0)
    id_scores = rng.normal(0, 1, 1000)
    ood_scores = rng.normal(1.5, 1, 2500)
    out = drawn_metrics(id_scores, ood_scores, draws=10, ood_fraction=0.2, seed=3)
    aurocs, auprs, fprs = [], [], []
    for idx in ood_draws(1000, 2500, 10, 0.2, 3):
        s = np.concatenate([id_scores, ood_scores[idx]])
        y = np.r_[np.zeros(1000), np.ones(len(idx))]
        aurocs.append(roc_auc_score(y, s))
        auprs.append(average_precision_score(y, s))
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        fprs.append(fpr[np.argmax(tpr >= 0.95 - 1e-12)])
    assert out["n_draws"] == 10 and out["n_id"] == 1000 and out["n_ood"] == 200
    assert out["auroc"] == pytest.approx(np.mean(aurocs), abs=1e-12)
    assert out["auroc_draw_std"] == pytest.approx(np.std(aurocs), abs=1e-12)
    assert out["aupr_out"] == pytest.approx(np.mean(auprs), abs=1e-12)
    assert out["fpr95"] == pytest.approx(np.mean(fprs), abs=1e-12)
    assert 0 < out["auroc_draw_std"] < 0.05


def test_detection_record_under_each_protocol(tmp_path):
    rng = np.random.default_rng(1)
    save_npz_atomic(tmp_path / "id.npz", logits=rng.normal(0, 3, (500, 10)).astype(np.float32))
    save_npz_atomic(tmp_path / "ood.npz", logits=rng.normal(0, 1, (800, 10)).astype(np.float32))
    full = detection_record(tmp_path / "id.npz", tmp_path / "ood.npz", "msp")
    assert full["protocol"] == "full" and full["n_ood"] == 800
    drawn = detection_record(tmp_path / "id.npz", tmp_path / "ood.npz", "msp",
                             protocol={"protocol": "oe_paper", "draws": 4, "ood_fraction": 0.2}, draw_seed=5)
    assert drawn["protocol"] == "oe_paper" and drawn["n_ood"] == 100 and len(drawn["draws"]) == 4
    assert drawn["auroc"] == pytest.approx(np.mean([d["auroc"] for d in drawn["draws"]]))


def test_nearest_recall_fpr95_takes_the_point_nearest_095_ours_the_first_reaching_it():
    # 20 OOD scores 1..20 and ID scores chosen so that TPR steps of 0.05 pass 0.95 exactly
    # at one threshold, and 40 OOD scores so that recall goes 0.925 -> 0.95 -> 0.975.
    ood = np.arange(1, 41, dtype=float)
    id_ = np.array([0.5, 1.5, 2.5, 3.5, 100.0])
    # Recall 0.95 needs 38 of 40 caught: threshold 3, where ID 3.5 and 100 are flagged (FPR 0.4).
    assert fpr_at_95_tpr(id_, ood) == pytest.approx(0.4)
    assert fpr_at_recall_nearest_95(id_, ood) == pytest.approx(0.4)
    # With 30 OOD scores no point has recall 0.95: ours takes the first above (29/30 = 0.967,
    # threshold 2, FPR 3/5), theirs the nearest (28/30 = 0.933 is 0.017 away, 29/30 is 0.017
    # away too: the first of the two, 28/30 at threshold 3, FPR 2/5).
    ood30 = np.arange(1, 31, dtype=float)
    assert fpr_at_95_tpr(id_, ood30) == pytest.approx(0.6)
    assert fpr_at_recall_nearest_95(id_, ood30) == pytest.approx(0.4)
