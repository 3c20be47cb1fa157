"""Robustness metrics: errors, means, overlap-aware mean, mCE, and the per-model tables."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.data.corruptions import CORRUPTIONS
from lib.evaluate.robustness import (OVERLAP, corruption_errors, mce, mean_accuracy, non_overlap_mean,
                            per_corruption_table, robustness_rows,
                            robustness_summary)


def test_errors_are_one_minus_accuracy():
    assert corruption_errors({"fog": 0.75, "stripe": 1.0}) == {"fog": 0.25, "stripe": 0.0}


@pytest.mark.parametrize("bad", [{"fog": 75.0}, {"fog": -0.1}, {}])
def test_accuracies_must_be_fractions(bad):
    with pytest.raises(ValueError):
        mean_accuracy(bad)


def test_mean_accuracy_by_hand():
    assert mean_accuracy({"fog": 0.5, "stripe": 0.7, "rotate": 0.9}) == pytest.approx(0.7)


def test_overlap_sets_are_the_published_ones():
    assert OVERLAP["pixmix"] == {"rotate", "shear", "translate", "brightness"}
    assert OVERLAP["saltpepper"] == {"impulse_noise"}
    assert OVERLAP["none"] == set()
    for names in OVERLAP.values():
        assert names <= set(CORRUPTIONS)


def test_non_overlap_mean_by_hand():
    acc = {"rotate": 0.2, "shear": 0.4, "fog": 0.9, "impulse_noise": 0.5, "stripe": 0.7}
    assert non_overlap_mean(acc, "pixmix") == pytest.approx((0.9 + 0.5 + 0.7) / 3)
    assert non_overlap_mean(acc, "saltpepper") == pytest.approx((0.2 + 0.4 + 0.9 + 0.7) / 4)
    assert non_overlap_mean(acc, "none") == pytest.approx(mean_accuracy(acc))


def test_non_overlap_mean_over_all_fifteen_uses_eleven_for_pixmix():
    acc = {name: (0.0 if name in OVERLAP["pixmix"] else 1.0) for name in CORRUPTIONS}
    assert non_overlap_mean(acc, "pixmix") == 1.0
    assert mean_accuracy(acc) == pytest.approx(11 / 15)


def test_non_overlap_mean_errors():
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'; known: external, none, pixmix, saltpepper"):
        non_overlap_mean({"fog": 0.5}, "mixup")
    with pytest.raises(ValueError, match="nothing is left"):
        non_overlap_mean({"rotate": 0.5}, "pixmix")


def test_mce_by_hand():
    model = {"fog": 0.10, "stripe": 0.30, "rotate": 0.05}
    baseline = {"fog": 0.20, "stripe": 0.20, "rotate": 0.10}
    # (0.5 + 1.5 + 0.5) / 3
    assert mce(model, baseline) == pytest.approx(2.5 / 3)


def test_mce_leaves_out_corruptions_the_baseline_gets_all_right():
    model = {"fog": 0.10, "stripe": 0.30, "translate": 0.02}
    baseline = {"fog": 0.20, "stripe": 0.20, "translate": 0.0}
    assert mce(model, baseline) == pytest.approx((0.5 + 1.5) / 2)
    assert mce(baseline, baseline) == 1.0
    assert math.isnan(mce({"fog": 0.1}, {"fog": 0.0}))


def test_mce_needs_the_same_corruptions():
    with pytest.raises(ValueError, match="different corruptions: stripe"):
        mce({"fog": 0.1, "stripe": 0.2}, {"fog": 0.1})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=15), st.floats(0.1, 1.0))
def test_mce_of_a_uniformly_scaled_error_is_the_scale(errors, factor):
    baseline = {f"c{i}": e for i, e in enumerate(errors)}
    model = {name: e * factor for name, e in baseline.items()}
    assert mce(model, baseline) == pytest.approx(factor)
    assert mce(baseline, baseline) == pytest.approx(1.0)


def long_table():
    """Two seeds; none/baseline, pixmix/oe and saltpepper/baseline on three corruptions."""
    acc = {
        ("none/baseline", 0): {"rotate": 0.80, "impulse_noise": 0.60, "fog": 0.90},
        ("none/baseline", 1): {"rotate": 0.70, "impulse_noise": 0.50, "fog": 0.80},
        ("pixmix/oe", 0): {"rotate": 0.90, "impulse_noise": 0.80, "fog": 0.95},
        ("pixmix/oe", 1): {"rotate": 0.85, "impulse_noise": 0.75, "fog": 0.90},
        ("saltpepper/baseline", 0): {"rotate": 0.60, "impulse_noise": 0.96, "fog": 0.70},
    }
    return pd.DataFrame([{"model": model, "seed": seed, "corruption": name, "accuracy": a}
                         for (model, seed), by_name in acc.items() for name, a in by_name.items()])


def test_robustness_rows_by_hand():
    rows = robustness_rows(long_table()).set_index(["model", "seed"])
    assert len(rows) == 5
    pix0 = rows.loc[("pixmix/oe", 0)]
    assert pix0["augment"] == "pixmix"
    assert pix0["n_corruptions"] == 3
    assert pix0["mean_accuracy"] == pytest.approx((0.90 + 0.80 + 0.95) / 3)
    assert pix0["non_overlap_mean"] == pytest.approx((0.80 + 0.95) / 2)
    assert pix0["left_out"] == "rotate"
    # errors 0.10/0.20, 0.20/0.40, 0.05/0.10 against seed 0's baseline
    assert pix0["mce"] == pytest.approx(0.5)
    pix1 = rows.loc[("pixmix/oe", 1)]
    # errors 0.15/0.30, 0.25/0.50, 0.10/0.20 against seed 1's baseline, not seed 0's
    assert pix1["mce"] == pytest.approx(0.5)
    sp0 = rows.loc[("saltpepper/baseline", 0)]
    assert sp0["non_overlap_mean"] == pytest.approx((0.60 + 0.70) / 2)
    assert sp0["left_out"] == "impulse_noise"
    assert sp0["mce"] == pytest.approx((0.40 / 0.20 + 0.04 / 0.40 + 0.30 / 0.10) / 3)
    assert rows.loc[("none/baseline", 1), "mce"] == 1.0
    assert rows.loc[("none/baseline", 1), "left_out"] == ""


def test_robustness_rows_without_a_baseline_seed_give_nan_mce():
    table = long_table()
    table = table[~((table["model"] == "none/baseline") & (table["seed"] == 1))]
    rows = robustness_rows(table).set_index(["model", "seed"])
    assert math.isnan(rows.loc[("pixmix/oe", 1), "mce"])
    assert rows.loc[("pixmix/oe", 0), "mce"] == pytest.approx(0.5)


def test_robustness_rows_reject_bad_tables():
    with pytest.raises(ValueError, match="lacks column"):
        robustness_rows(long_table().drop(columns="seed"))
    doubled = pd.concat([long_table(), long_table().iloc[:1]])
    with pytest.raises(ValueError, match="more than one accuracy"):
        robustness_rows(doubled)


def test_robustness_rows_need_matching_corruptions_for_mce():
    table = long_table()
    table = table[~((table["model"] == "pixmix/oe") & (table["corruption"] == "fog"))]
    with pytest.raises(ValueError, match="different corruptions: fog"):
        robustness_rows(table)


def test_robustness_summary_over_seeds():
    summary = robustness_summary(robustness_rows(long_table())).set_index("model")
    pix = summary.loc["pixmix/oe"]
    assert pix["n_seeds"] == 2
    means = [(0.90 + 0.80 + 0.95) / 3, (0.85 + 0.75 + 0.90) / 3]
    assert pix["mean_accuracy_mean"] == pytest.approx(np.mean(means))
    assert pix["mean_accuracy_std"] == pytest.approx(np.std(means, ddof=1))
    assert pix["mce_mean"] == pytest.approx(0.5)
    assert pix["left_out"] == "rotate"
    assert math.isnan(summary.loc["saltpepper/baseline", "mce_std"])  # one seed


def test_per_corruption_table_marks_overlaps():
    cells = per_corruption_table(long_table()).set_index(["model", "corruption"])
    assert cells.loc[("pixmix/oe", "rotate"), "overlaps"]
    assert not cells.loc[("pixmix/oe", "impulse_noise"), "overlaps"]
    assert cells.loc[("saltpepper/baseline", "impulse_noise"), "overlaps"]
    assert not cells.loc[("none/baseline", "rotate"), "overlaps"]
    assert cells.loc[("pixmix/oe", "fog"), "mean"] == pytest.approx(0.925)
    assert cells.loc[("pixmix/oe", "fog"), "std"] == pytest.approx(np.std([0.95, 0.90], ddof=1))
    assert cells.loc[("pixmix/oe", "fog"), "n_seeds"] == 2
