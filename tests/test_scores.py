import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lib.scores import SCORE_NAMES, compute_score, msp_score, xent_score

# Two examples, three classes: a peaked row and a flat row.
LOGITS = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


def test_msp_hand_values():
    # row 0: e^2 / (e^2 + 2); row 1: 1/3
    e2 = np.exp(2.0)
    np.testing.assert_allclose(msp_score(LOGITS), [-e2 / (e2 + 2), -1 / 3], rtol=1e-12)


def test_xent_hand_values():
    # row 0: mean 2/3, logsumexp log(e^2 + 2); row 1: 1 - (1 + log 3) = -log 3
    e2 = np.exp(2.0)
    expected = [2 / 3 - np.log(e2 + 2), -np.log(3.0)]
    np.testing.assert_allclose(xent_score(LOGITS), expected, rtol=1e-12)


def test_xent_is_minus_cross_entropy_from_uniform():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20, 10)) * 3
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    cross_entropy_from_uniform = -logp.mean(axis=1)
    np.testing.assert_allclose(xent_score(z), -cross_entropy_from_uniform, rtol=1e-10)


@pytest.mark.parametrize("name", ["msp", "xent"])
def test_flat_ood_logits_score_higher_than_confident_id(name):
    id_logits = np.array([[8.0, 0.0, 0.0, 0.0], [0.0, 6.0, -1.0, 0.5]])
    ood_logits = np.zeros((2, 4))
    id_s = compute_score(name, {"logits": id_logits})
    ood_s = compute_score(name, {"logits": ood_logits})
    assert ood_s.min() > id_s.max()


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (5, 4), elements=st.floats(-30, 30)))
def test_scores_are_shift_invariant_and_bounded(z):
    shifted = z + 7.5
    np.testing.assert_allclose(msp_score(z), msp_score(shifted), atol=1e-9)
    np.testing.assert_allclose(xent_score(z), xent_score(shifted), atol=1e-9)
    assert np.all(msp_score(z) <= -1 / 4 + 1e-12) and np.all(msp_score(z) >= -1)
    assert np.all(xent_score(z) <= -np.log(4) + 1e-9)


def test_compute_score_rejects_unknown_name():
    with pytest.raises(ValueError, match="msq.*allowed: msp"):
        compute_score("msq", {"logits": LOGITS})


def test_score_names_all_computable_from_logits_dispatch():
    assert set(SCORE_NAMES) >= {"msp", "xent"}
