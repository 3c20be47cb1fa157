import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.evaluate.metrics import (
    accuracy,
    adaptive_bins,
    aupr_in,
    aupr_out,
    auroc,
    auroc_pair_count,
    brier,
    calibration_metrics,
    detection_metrics,
    ece,
    fit_temperature,
    fpr_at_95_tpr,
    nll,
    reliability_bins,
    rms_calibration_error,
)


def mann_whitney_auroc(id_scores, ood_scores):
    """Fraction of (OOD, ID) pairs with the OOD score higher; ties count half."""
    wins = 0.0
    for o in ood_scores:
        for i in id_scores:
            wins += 1.0 if o > i else 0.5 if o == i else 0.0
    return wins / (len(ood_scores) * len(id_scores))


def test_accuracy_hand_case():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([1, 0, 0, 1])
    assert accuracy(logits, labels) == 0.5


def test_accuracy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="labels"):
        accuracy(np.zeros((3, 2)), np.zeros(4, int))


def test_auroc_hand_case_with_tie():
    id_scores = [0.1, 0.4, 0.35]
    ood_scores = [0.8, 0.4, 0.2]
    # pairs (ood > id): 0.8 beats 3; 0.4 beats 0.1, 0.35 and ties 0.4; 0.2 beats 0.1
    expected = (3 + 2.5 + 1) / 9
    assert auroc(id_scores, ood_scores) == pytest.approx(expected)
    assert mann_whitney_auroc(id_scores, ood_scores) == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=12),
    st.lists(st.integers(-5, 5), min_size=1, max_size=12),
)
def test_auroc_equals_mann_whitney_pair_count(id_scores, ood_scores):
    expected = mann_whitney_auroc(id_scores, ood_scores)
    assert auroc(id_scores, ood_scores) == pytest.approx(expected)
    assert auroc_pair_count(id_scores, ood_scores) == pytest.approx(expected)


def test_auroc_ood_is_positive_class():
    assert auroc([0.0, 0.1], [0.9, 1.0]) == 1.0
    assert auroc([0.9, 1.0], [0.0, 0.1]) == 0.0


def test_auroc_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="both ID and OOD"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        auroc([np.nan, 0.0], [1.0])


# ---- more detection metrics ---------------------------------------------------------


def hand_average_precision(scores, positive):
    """Sum over distinct thresholds (high to low) of precision * recall increment."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    ap, previous_recall = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        flagged = scores >= t
        recall = (flagged & positive).sum() / positive.sum()
        precision = (flagged & positive).sum() / flagged.sum()
        ap += precision * (recall - previous_recall)
        previous_recall = recall
    return ap


def test_aupr_constructed_case():
    # Ranked high to low: O(4) O(3) I(2) O(1) I(0)
    id_scores, ood_scores = [2.0, 0.0], [4.0, 3.0, 1.0]
    # OOD positive: hits at ranks 1, 2, 4 -> (1 + 1 + 3/4) / 3
    assert aupr_out(id_scores, ood_scores) == pytest.approx(11 / 12)
    # ID positive, negated scores: I(0) O(1) I(2) O O -> hits at ranks 1, 3 -> (1 + 2/3) / 2
    assert aupr_in(id_scores, ood_scores) == pytest.approx(5 / 6)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(-4, 4), min_size=1, max_size=10),
    st.lists(st.integers(-4, 4), min_size=1, max_size=10),
)
def test_aupr_matches_hand_average_precision_with_ties(id_scores, ood_scores):
    scores = np.array(id_scores + ood_scores, float)
    is_ood = np.array([0] * len(id_scores) + [1] * len(ood_scores))
    assert aupr_out(id_scores, ood_scores) == pytest.approx(hand_average_precision(scores, is_ood == 1))
    assert aupr_in(id_scores, ood_scores) == pytest.approx(hand_average_precision(-scores, is_ood == 0))


@pytest.mark.parametrize("shift, expected", [(0, 0.95), (50, 0.45), (95, 0.0), (96, 0.0)])
def test_fpr95_on_shifted_ranks(shift, expected):
    # ID scores 0..99, OOD scores shift..shift+99. Catching 95 of 100 OOD needs the
    # threshold shift+5, which flags the ID scores >= shift+5 (a tie counts as flagged).
    id_scores = np.arange(100)
    ood_scores = np.arange(100) + shift
    assert fpr_at_95_tpr(id_scores, ood_scores) == pytest.approx(expected)


def test_fpr95_catches_at_least_95_percent_without_interpolation():
    # 20 OOD: 18 high, 2 low. The 95% threshold must reach the 19th OOD score (-1),
    # which lies below 3 of the 4 ID scores.
    id_scores = [5.0, 0.0, 0.5, -3.0]
    ood_scores = [10.0] * 18 + [-1.0, -2.0]
    assert fpr_at_95_tpr(id_scores, ood_scores) == pytest.approx(3 / 4)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-10, 10), min_size=1, max_size=30),
    st.lists(st.floats(-10, 10), min_size=1, max_size=30),
)
def test_fpr95_is_fraction_of_id_at_or_above_the_95_percent_ood_threshold(id_scores, ood_scores):
    ood_sorted = np.sort(ood_scores)[::-1]
    k = int(np.ceil(0.95 * len(ood_sorted) - 1e-9))  # OOD examples that must be caught
    threshold = ood_sorted[k - 1]
    expected = np.mean(np.asarray(id_scores) >= threshold)
    assert fpr_at_95_tpr(id_scores, ood_scores) == pytest.approx(expected)


def test_detection_metrics_perfect_separation_and_sizes():
    m = detection_metrics([0.0, 0.1, 0.2], [1.0, 2.0])
    assert m == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0, "fpr95_nearest": 0.0, "n_id": 3, "n_ood": 2}


# ---- classification and calibration -------------------------------------------------


def test_nll_hand_value():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    expected = (-(2 - np.log(np.exp(2) + 2)) + np.log(3)) / 2
    assert nll(logits, [0, 2]) == pytest.approx(expected)


def test_labels_outside_classes_are_rejected():
    with pytest.raises(ValueError, match="-1 marks a set without labels"):
        nll(np.zeros((2, 3)), [0, -1])


def test_brier_hand_value():
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    # (0.09 + 0.04 + 0.01) and (0.25 + 0.25 + 0)
    assert brier(probs, [0, 1]) == pytest.approx((0.14 + 0.5) / 2)
    assert brier(np.eye(3), [0, 1, 2]) == 0.0
    assert brier(np.eye(3), [1, 2, 0]) == 2.0


def test_reliability_bins_right_closed_edges():
    # With 5 bins the edges are 0, .2, .4, .6, .8, 1; 0.4 falls in bin 1, 0.41 in bin 2.
    bins = reliability_bins([0.0, 0.4, 0.41, 1.0, 0.95], [1, 0, 1, 1, 0], n_bins=5)
    np.testing.assert_array_equal(bins["count"], [1, 1, 1, 0, 2])
    np.testing.assert_allclose(bins["mean_confidence"][[0, 1, 2, 4]], [0.0, 0.4, 0.41, 0.975])
    np.testing.assert_allclose(bins["accuracy"][[0, 1, 2, 4]], [1.0, 0.0, 1.0, 0.5])
    assert np.isnan(bins["accuracy"][3])


def test_ece_constructed_case():
    # 15 bins of width 1/15. Bin (0.6, 0.667]: conf 0.65 x4, 3 right -> gap 0.1.
    # Bin (0.933, 1]: conf 0.95 x6, 6 right -> gap 0.05.
    conf = [0.65] * 4 + [0.95] * 6
    correct = [1, 1, 1, 0] + [1] * 6
    assert ece(conf, correct) == pytest.approx(0.4 * 0.1 + 0.6 * 0.05)
    assert ece([0.8] * 10, [1] * 8 + [0] * 2) == pytest.approx(0.0)


def test_rms_constructed_case():
    # 300 examples, 3 bins of 100 after sorting: gaps 0.2, 0.1, 0.0.
    conf = [0.5] * 100 + [0.7] * 100 + [0.9] * 100
    correct = [1] * 30 + [0] * 70 + [1] * 60 + [0] * 40 + [1] * 90 + [0] * 10
    expected = np.sqrt((0.2**2 + 0.1**2 + 0.0) / 3)
    assert rms_calibration_error(conf, correct) == pytest.approx(expected)


def test_rms_last_bin_takes_the_remainder_and_small_sets_have_one_bin():
    assert adaptive_bins(250) == [(0, 100), (100, 250)]
    assert adaptive_bins(40) == [(0, 40)]
    assert rms_calibration_error([0.9] * 40, [0] * 40) == pytest.approx(0.9)


def rms_calibration_error_reference_style(confidences, correct, bin_size=100):
    """The Outlier Exposure / PixMix `calib_err` (p='2') behaviour, rewritten:
    same sorted adaptive bins, but the loop stops before the last bin."""
    order = np.argsort(confidences, kind="stable")
    conf, corr = np.asarray(confidences, float)[order], np.asarray(correct, float)[order]
    bins = adaptive_bins(conf.size, bin_size)
    total = 0.0
    for start, stop in bins[:-1]:
        total += (stop - start) / conf.size * (conf[start:stop].mean() - corr[start:stop].mean()) ** 2
    return np.sqrt(total)


def test_rms_penalises_wrong_most_confident_predictions_that_reference_style_misses():
    # 900 well-calibrated examples, then the 100 most confident predictions, all wrong.
    rng = np.random.default_rng(0)
    calibrated_conf = np.repeat(np.linspace(0.3, 0.9, 9), 100)
    calibrated_correct = rng.random(900) < calibrated_conf
    conf = np.concatenate([calibrated_conf, np.full(100, 0.999)])
    correct = np.concatenate([calibrated_correct, np.zeros(100, bool)])

    ours = rms_calibration_error(conf, correct)
    reference = rms_calibration_error_reference_style(conf, correct)
    # The last bin alone contributes sqrt(0.1 * 0.999^2) ~ 0.316.
    assert ours >= np.sqrt(0.1) * 0.999
    assert reference < 0.1
    # On the same data with the last bin right, both agree that calibration is good.
    fixed = np.concatenate([calibrated_correct, rng.random(100) < 0.999])
    assert rms_calibration_error(conf, fixed) < 0.1


def test_calibration_metrics_of_perfectly_confident_right_model():
    logits = np.eye(4)[[0, 1, 2, 3] * 50] * 50.0
    labels = np.array([0, 1, 2, 3] * 50)
    m = calibration_metrics(logits, labels)
    assert m["accuracy"] == 1.0 and m["n"] == 200 and m["temperature"] == 1.0
    for key in ("nll", "ece", "rms", "brier"):
        assert m[key] == pytest.approx(0.0, abs=1e-12)


def test_temperature_scaling_lowers_nll_on_overconfident_model():
    # Labels drawn from softmax(z); the model reports 4 z, so T = 4 is the truth.
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 10)) * 1.5
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = (probs.cumsum(axis=1) > rng.random((4000, 1))).argmax(axis=1)
    logits = 4.0 * z
    t = fit_temperature(logits[:2000], labels[:2000])
    assert t == pytest.approx(4.0, rel=0.1)
    before = calibration_metrics(logits[2000:], labels[2000:])
    after = calibration_metrics(logits[2000:], labels[2000:], temperature=t)
    assert after["nll"] < before["nll"] - 0.5
    assert after["ece"] < before["ece"] and after["rms"] < before["rms"]
    assert after["brier"] < before["brier"]
    assert after["accuracy"] == before["accuracy"]


def test_fit_temperature_is_the_nll_minimiser():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(500, 5)) * 3
    labels = rng.integers(0, 5, 500)
    t = fit_temperature(logits, labels)
    for other in (t * 0.9, t * 1.1):
        assert nll(logits / t, labels) < nll(logits / other, labels)
