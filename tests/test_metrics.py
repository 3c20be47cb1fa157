import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.metrics import accuracy, auroc


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
    assert auroc(id_scores, ood_scores) == pytest.approx(mann_whitney_auroc(id_scores, ood_scores))


def test_auroc_ood_is_positive_class():
    assert auroc([0.0, 0.1], [0.9, 1.0]) == 1.0
    assert auroc([0.9, 1.0], [0.0, 0.1]) == 0.0


def test_auroc_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="both ID and OOD"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        auroc([np.nan, 0.0], [1.0])
