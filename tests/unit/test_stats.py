import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from lib.evaluate.metrics import auroc, auroc_pair_count
from lib.evaluate.stats import bootstrap_difference_ci, mean_std, paired_difference_ci


def test_mean_std_hand_values():
    assert mean_std([1.0, 2.0, 3.0, 6.0]) == {"mean": 3.0, "std": pytest.approx(np.sqrt(14 / 3)), "n": 4}


def test_mean_std_single_value_has_nan_std():
    m = mean_std([0.99])
    assert m["mean"] == 0.99 and m["n"] == 1 and np.isnan(m["std"])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=10))
def test_mean_std_matches_statistics_module(values):
    m = mean_std(values)
    assert m["mean"] == pytest.approx(statistics.fmean(values), abs=1e-9)
    assert m["std"] == pytest.approx(statistics.stdev(values), abs=1e-6)


def test_mean_std_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        mean_std([])


def test_paired_ci_hand_formula_and_scipy():
    model = np.array([0.991, 0.993, 0.989, 0.995, 0.992])
    baseline = np.array([0.985, 0.990, 0.988, 0.989, 0.986])
    d = model - baseline
    se = d.std(ddof=1) / np.sqrt(5)
    t = 2.7764451051977987  # t_{0.975, 4}
    ci = paired_difference_ci(model, baseline)
    assert ci["diff"] == pytest.approx(d.mean())
    assert (ci["low"], ci["high"]) == pytest.approx((d.mean() - t * se, d.mean() + t * se))
    assert (ci["low"], ci["high"]) == pytest.approx(
        scipy_stats.t.interval(0.95, 4, loc=d.mean(), scale=se)
    )
    # scipy's paired t test gives the same interval
    rel = scipy_stats.ttest_rel(model, baseline).confidence_interval(0.95)
    assert (ci["low"], ci["high"]) == pytest.approx((rel.low, rel.high))
    assert ci["n"] == 5 and "paired" in ci["method"]


def test_paired_ci_is_paired_not_pooled():
    # A constant per-seed gain is certain, however much the seeds themselves vary.
    baseline = np.array([0.80, 0.95, 0.70])
    ci = paired_difference_ci(baseline + 0.01, baseline)
    assert ci["low"] == pytest.approx(0.01) and ci["high"] == pytest.approx(0.01)


def test_paired_ci_one_seed_and_mismatch():
    ci = paired_difference_ci([0.9], [0.8])
    assert ci["diff"] == pytest.approx(0.1) and np.isnan(ci["low"]) and np.isnan(ci["high"])
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference_ci([0.9, 0.8], [0.8])


def test_bootstrap_covers_true_accuracy_difference_in_most_replicates():
    # Paired correctness: the model fixes 5% of examples the baseline gets wrong.
    true_diff = 0.05
    covered = 0
    for replicate in range(40):
        rng = np.random.default_rng(replicate)
        u = rng.random(1000)
        baseline = u < 0.85
        model = u < 0.90
        ci = bootstrap_difference_ci(model, baseline, np.mean, n_boot=300, seed=replicate)
        covered += ci["low"] <= true_diff <= ci["high"]
    assert covered >= 34  # nominal 95% of 40 = 38


def test_bootstrap_auroc_difference_resamples_id_and_ood_separately():
    rng = np.random.default_rng(0)
    n_id, n_ood = 300, 200
    id_noise, ood_noise = rng.normal(size=n_id), rng.normal(size=n_ood)
    # Model separates OOD by 2 standard deviations, baseline by 1, same examples.
    model = (id_noise, ood_noise + 2.0)
    baseline = (id_noise, ood_noise + 1.0)
    true_diff = scipy_stats.norm.cdf(2 / np.sqrt(2)) - scipy_stats.norm.cdf(1 / np.sqrt(2))
    ci = bootstrap_difference_ci(model, baseline, auroc_pair_count, n_boot=200, seed=1)
    assert ci["diff"] == pytest.approx(auroc(*model) - auroc(*baseline))
    assert ci["low"] <= true_diff <= ci["high"]
    assert ci["low"] > 0 and ci["n"] == n_id + n_ood
    assert "separately" in ci["method"]

    seen_sizes = set()

    def sizes(id_scores, ood_scores):
        seen_sizes.add((len(id_scores), len(ood_scores)))
        return 0.0

    bootstrap_difference_ci(model, baseline, sizes, n_boot=5)
    assert seen_sizes == {(n_id, n_ood)}


def test_bootstrap_identical_models_give_zero_interval_and_is_reproducible():
    correct = np.random.default_rng(2).random(200) < 0.7
    ci = bootstrap_difference_ci(correct, correct, np.mean, n_boot=50)
    assert ci["diff"] == ci["low"] == ci["high"] == 0.0
    other = np.random.default_rng(3).random(200) < 0.7
    a = bootstrap_difference_ci(other, correct, np.mean, n_boot=50, seed=7)
    b = bootstrap_difference_ci(other, correct, np.mean, n_boot=50, seed=7)
    assert a == b


def test_bootstrap_rejects_unpaired_sets():
    with pytest.raises(ValueError, match="same test examples"):
        bootstrap_difference_ci(np.ones(5), np.ones(6), np.mean)
