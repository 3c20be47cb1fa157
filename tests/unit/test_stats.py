import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from lib.evaluate import stats
from lib.evaluate.metrics import auroc, ece
from lib.evaluate.stats import hierarchical_bootstrap, mean_std, paired_difference_ci


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


# ---- batched replicates equal the metric on explicitly resampled data --------------------


def test_resample_counts_are_draws_of_n_with_replacement():
    counts = stats.resample_counts(50, 7, np.random.default_rng(0))
    assert counts.shape == (50, 7) and counts.dtype == np.int32
    assert (counts.sum(axis=0) == 50).all() and (counts >= 0).all()
    assert np.array_equal(counts, stats.resample_counts(50, 7, np.random.default_rng(0)))
    # about 1 - 1/e of the items appear in a replicate
    assert 0.55 < (counts > 0).mean() < 0.72


def test_auroc_replicates_equal_auroc_of_the_resampled_scores_ties_included():
    rng = np.random.default_rng(1)
    id_scores = np.round(rng.normal(size=300), 1)           # rounded: many ties, within and across sets
    oods = [np.round(rng.normal(1.0, 1.0, 200), 1), np.round(rng.normal(0.3, 1.0, 120), 1)]
    id_counts = stats.resample_counts(300, 6, rng)
    ood_counts = [stats.resample_counts(len(o), 6, rng) for o in oods]
    observed, reps = stats.auroc_replicates(id_scores, id_counts, oods, ood_counts)
    assert reps.shape == (6, 2)
    for s, ood in enumerate(oods):
        assert observed[s] == pytest.approx(auroc(id_scores, ood))
        for b in range(6):
            resampled = auroc(np.repeat(id_scores, id_counts[:, b]), np.repeat(ood, ood_counts[s][:, b]))
            assert reps[b, s] == pytest.approx(resampled, abs=1e-12)


def test_weighted_ece_and_means_equal_the_metrics_on_resampled_examples():
    rng = np.random.default_rng(2)
    confidence = rng.uniform(0.1, 1.0, (400, 3))
    correct = (rng.random((400, 3)) < confidence).astype(float)
    counts = stats.resample_counts(400, 5, rng)
    got = stats.weighted_ece(counts, confidence, correct)
    means = stats.weighted_means(counts, correct)
    for b in range(5):
        for k in range(3):
            repeated = np.repeat(confidence[:, k], counts[:, b]), np.repeat(correct[:, k], counts[:, b])
            assert got[b, k] == pytest.approx(ece(*repeated), abs=1e-12)
            assert means[b, k] == pytest.approx(repeated[1].mean())


# ---- the two-level bootstrap ----------------------------------------------------------------


def _study(rng, n_seeds, n_examples, seed_sd, example_sd, mu=1.0, tau=1.0, delta=0.3):
    """0/1 correctness of a model and a baseline, both tested on the same images by every seed.

    Example i has difficulty theta_i (shared by both models and all seeds) and its own gain
    delta_i ~ N(delta, example_sd^2) for the model (shared by all seeds); each seed adds a
    training effect ~ N(0, seed_sd^2) per model, and each (seed, image) its own N(0, 1) noise.
    The true difference, over images and seeds, is in closed form (a probit model)."""
    theta = rng.normal(mu, tau, n_examples)
    gain = rng.normal(delta, example_sd, n_examples)
    model = theta + gain + rng.normal(0, seed_sd, (n_seeds, 1)) + rng.normal(size=(n_seeds, n_examples)) > 0
    base = theta + rng.normal(0, seed_sd, (n_seeds, 1)) + rng.normal(size=(n_seeds, n_examples)) > 0
    true = (scipy_stats.norm.cdf((mu + delta) / np.sqrt(1 + tau ** 2 + example_sd ** 2 + seed_sd ** 2))
            - scipy_stats.norm.cdf(mu / np.sqrt(1 + tau ** 2 + seed_sd ** 2)))
    return list(model.astype(float)), list(base.astype(float)), true


@pytest.mark.parametrize("n_seeds, seed_sd, example_sd", [
    (3, 0.3, 1.0),   # seeds dominate: the interval must be as wide as a t with 2 df
    (5, 0.05, 1.0),  # the shared test images dominate
    (1, 0.0, 1.0),   # one seed: the example bootstrap
])
def test_hierarchical_bootstrap_covers_the_true_difference_at_the_nominal_rate(n_seeds, seed_sd, example_sd):
    studies, covered, rejected_right = 300, 0, 0
    for i in range(studies):
        model, base, true = _study(np.random.default_rng(100 + i), n_seeds, 400, seed_sd, example_sd)
        ci = hierarchical_bootstrap(model, base, "mean", n_boot=200, seed=i)
        covered += ci["low"] <= true <= ci["high"]
        rejected_right += (ci["p"] < 0.05) == (ci["low"] > 0 or ci["high"] < 0)
    # nominal 95%: at least nominal within 3 Monte-Carlo standard errors (0.0126), and not
    # so wide that it is useless (Banerjee's interval is a little conservative by design)
    assert 0.95 - 3 * 0.0126 <= covered / studies <= 0.99
    assert rejected_right == studies  # p < 0.05 exactly when the 95% interval excludes 0


def test_test_images_shared_by_the_seeds_are_not_averaged_away():
    # Seeds that agree perfectly still leave the test set's own sampling noise.
    rng = np.random.default_rng(5)
    gain = (rng.random(500) < 0.1).astype(float)            # the model fixes 10% of the images
    base = [np.zeros(500)] * 3
    ci = hierarchical_bootstrap([gain] * 3, base, "mean", n_boot=400, seed=1)
    one = hierarchical_bootstrap([gain], [np.zeros(500)], "mean", n_boot=400, seed=1)
    assert ci["se_seeds"] == 0 and ci["se_examples"] == pytest.approx(one["se_examples"])
    assert ci["se_examples"] == pytest.approx(np.sqrt(0.1 * 0.9 / 500), rel=0.15)
    assert ci["low"] > 0.05 and ci["n_seeds"] == 3


def test_one_seed_is_the_example_bootstrap_with_a_normal_interval():
    rng = np.random.default_rng(0)
    u = rng.random(1000)
    ci = hierarchical_bootstrap([u < 0.90], [u < 0.85], "mean", n_boot=300, seed=3)
    assert ci["se_seeds"] == 0 and ci["n_seeds"] == 1 and ci["n_examples"] == 1000
    assert ci["high"] - ci["diff"] == pytest.approx(scipy_stats.norm.ppf(0.975) * ci["se_examples"])
    assert ci["p"] == pytest.approx(2 * scipy_stats.norm.sf(ci["diff"] / ci["se_examples"]))
    assert "one seed" in ci["method"]


def test_auroc_bootstrap_resamples_id_and_ood_and_finds_a_real_gap():
    rng = np.random.default_rng(0)
    id_noise, ood_noise = rng.normal(size=300), rng.normal(size=200)
    model, baseline = (id_noise, ood_noise + 2.0), (id_noise, ood_noise + 1.0)
    true_diff = scipy_stats.norm.cdf(2 / np.sqrt(2)) - scipy_stats.norm.cdf(1 / np.sqrt(2))
    ci = hierarchical_bootstrap([model], [baseline], "auroc", n_boot=300, seed=1)
    assert ci["diff"] == pytest.approx(auroc(*model) - auroc(*baseline))
    assert ci["low"] <= true_diff <= ci["high"] and ci["low"] > 0 and ci["n_examples"] == 500


def test_ece_statistic_is_the_mean_ece_over_groups():
    rng = np.random.default_rng(4)
    groups = [np.column_stack([c, rng.random(300) < c]) for c in (rng.uniform(0.3, 1, 300), rng.uniform(0.5, 1, 300))]
    other = [np.column_stack([g[:, 0] * 0.9, g[:, 1]]) for g in groups]
    ci = hierarchical_bootstrap([tuple(groups)], [tuple(other)], "ece", n_boot=50)
    expected = np.mean([ece(*g.T) for g in groups]) - np.mean([ece(*g.T) for g in other])
    assert ci["diff"] == pytest.approx(expected)


def test_identical_models_give_a_zero_interval_and_draws_are_reproducible():
    correct = np.random.default_rng(2).random(200) < 0.7
    ci = hierarchical_bootstrap([correct, correct], [correct, correct], "mean", n_boot=50)
    assert ci["diff"] == ci["low"] == ci["high"] == 0.0 and ci["p"] == 1.0
    other = np.random.default_rng(3).random(200) < 0.7
    assert hierarchical_bootstrap([other], [correct], "mean", seed=7) == hierarchical_bootstrap([other], [correct], "mean", seed=7)


def test_bootstrap_rejects_unpaired_sets():
    with pytest.raises(ValueError, match="same test examples"):
        hierarchical_bootstrap([np.ones(5)], [np.ones(6)], "mean")
    with pytest.raises(ValueError, match="same seeds"):
        hierarchical_bootstrap([np.ones(5), np.ones(5)], [np.ones(5)], "mean")


def test_p_value_matches_the_closed_forms_at_the_edges():
    # only the example part: a normal test; only the seed part: a t test with S - 1 df
    assert stats.p_value(0.03, 0.0, 0.01, 1) == pytest.approx(2 * scipy_stats.norm.sf(3.0), rel=1e-6)
    assert stats.p_value(0.03, 0.01, 0.0, 3) == pytest.approx(2 * scipy_stats.t.sf(3.0, 2), rel=1e-6)
    both = stats.p_value([0.0, 0.02, 0.5], [0.01] * 3, [0.01] * 3, [4] * 3)
    assert both[0] == 1.0 and 0 < both[2] < both[1] < 1
    half = stats.half_width(0.01, 0.01, 4)
    assert stats.p_value(half, 0.01, 0.01, 4) == pytest.approx(0.05, rel=1e-6)


# ---- many comparisons and ranks ---------------------------------------------------------------


def test_holm_against_a_hand_computed_case():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06,
    # 1 x 0.04 = 0.04 -> raised to the running maximum 0.06; back in the input order:
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]).size == 0
    with pytest.raises(ValueError, match="p-values"):
        stats.holm([0.1, 1.5])


@pytest.mark.parametrize("k, q", [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (6, 2.850), (8, 3.031), (10, 3.164)])
def test_nemenyi_critical_difference_matches_demsar_table(k, q):
    # Demsar 2006, table 5a (alpha = 0.05): CD = q_alpha sqrt(k (k + 1) / (6 N))
    assert stats.nemenyi_cd(k, 10) == pytest.approx(q * np.sqrt(k * (k + 1) / 60), abs=1e-3)


def test_nemenyi_cd_for_four_models_on_ten_sets_is_1_48():
    assert stats.nemenyi_cd(4, 10) == pytest.approx(1.48, abs=0.005)


def test_friedman_ranks_ties_and_scipy():
    values = np.array([[0.9, 0.8, 0.7], [0.95, 0.85, 0.85], [0.6, 0.7, 0.5], [0.99, 0.98, 0.97]])
    result = stats.friedman(values)
    # ranks per block (1 = highest): [1,2,3], [1,2.5,2.5], [2,1,3], [1,2,3]
    assert result["mean_ranks"] == pytest.approx([5 / 4, 7.5 / 4, 11.5 / 4])
    expected = scipy_stats.friedmanchisquare(*values.T)
    assert result["chi2"] == pytest.approx(expected.statistic) and result["p"] == pytest.approx(expected.pvalue)
    assert stats.friedman(values, higher_is_better=False)["mean_ranks"] == pytest.approx([11 / 4, 8.5 / 4, 4.5 / 4])
    assert np.isnan(stats.friedman(values[:, :2])["p"])           # two treatments: no Friedman test
    assert np.isnan(stats.friedman(np.ones((3, 3)))["p"])         # every block tied


# ---- how many seeds ----------------------------------------------------------------------------


def test_detectable_difference_is_the_paired_t_power_formula_without_example_noise():
    sd = 0.01
    for n in (2, 3, 10):
        hand = (scipy_stats.t.ppf(0.975, n - 1) + scipy_stats.t.ppf(0.8, n - 1)) * sd / np.sqrt(n)
        assert stats.detectable_difference(sd, 0.0, n) == pytest.approx(hand)
    assert np.isnan(stats.detectable_difference(sd, 0.001, 1))
    # only the test set's noise: (z_0.975 + z_0.8) se = 2.80 se, whatever the seeds
    assert stats.detectable_floor(0.001) == pytest.approx(2.8016e-3, abs=1e-6)
    assert stats.detectable_difference(1e-12, 0.001, 50) == pytest.approx(stats.detectable_floor(0.001))


def test_seeds_needed_is_the_smallest_count_that_detects_the_difference():
    sd, se = 0.01, 0.001
    n = stats.seeds_needed(0.01, sd, se)
    assert stats.detectable_difference(sd, se, n) <= 0.01 < stats.detectable_difference(sd, se, n - 1)
    assert stats.seeds_needed(0.02, sd, se) < n
    assert stats.seeds_needed(0.002, sd, se) is None   # below the floor 2.8 x 0.001: no number of seeds suffices
    assert stats.seeds_needed(0.01, float("nan"), se) is None
