import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import logsumexp, softmax

from lib.evaluate.scores import (
    SCORE_INPUTS,
    SCORE_NAMES,
    compute_score,
    energy_score,
    fit_mahalanobis,
    mahalanobis_score,
    maxlogit_score,
    msp_score,
    odin_logits,
    odin_score,
    xent_score,
)

# Two examples, three classes: a peaked row and a flat row.
LOGITS = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
E2 = np.exp(2.0)
LOGIT_SCORES = ("msp", "xent", "energy", "maxlogit")


class TinyNet(torch.nn.Module):
    """The lead's model interface: model(x) = model.head(model.features(x))."""

    def __init__(self, n_classes=3, width=6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.body = torch.nn.Linear(28 * 28, width).double()
        self.head = torch.nn.Linear(width, n_classes).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)

    def features(self, x):
        return torch.tanh(self.body(x.flatten(1)))

    def forward(self, x):
        return self.head(self.features(x))


class LinearNet(torch.nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, 28, 28), generator=g, dtype=torch.float64)


# ---- scores from logits -------------------------------------------------------------


def test_msp_hand_values():
    # row 0: e^2 / (e^2 + 2); row 1: 1/3
    np.testing.assert_allclose(msp_score(LOGITS), [-E2 / (E2 + 2), -1 / 3], rtol=1e-12)


def test_xent_hand_values():
    # row 0: mean 2/3, logsumexp log(e^2 + 2); row 1: 1 - (1 + log 3) = -log 3
    np.testing.assert_allclose(xent_score(LOGITS), [2 / 3 - np.log(E2 + 2), -np.log(3.0)], rtol=1e-12)


def test_xent_is_minus_cross_entropy_from_uniform():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20, 10)) * 3
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    cross_entropy_from_uniform = -logp.mean(axis=1)
    np.testing.assert_allclose(xent_score(z), -cross_entropy_from_uniform, rtol=1e-10)


def test_energy_hand_values():
    # row 0: -log(e^2 + 2); row 1: -log(3 e) = -(1 + log 3)
    np.testing.assert_allclose(energy_score(LOGITS), [-np.log(E2 + 2), -1 - np.log(3.0)], rtol=1e-12)


def test_maxlogit_hand_values():
    np.testing.assert_allclose(maxlogit_score(LOGITS), [-2.0, -1.0])


def test_odin_score_is_msp_of_odin_logits():
    np.testing.assert_allclose(odin_score(LOGITS), [-E2 / (E2 + 2), -1 / 3], rtol=1e-12)


@pytest.mark.parametrize("name", LOGIT_SCORES + ("odin",))
def test_flat_ood_logits_score_higher_than_confident_id(name):
    # Flat OOD logits at the same mean level as the ID logits: no class stands out.
    id_logits = np.array([[8.0, 0.0, 0.0, 0.0], [0.0, 6.0, -1.0, 0.5]])
    ood_logits = np.full((2, 4), 1.0)
    key = SCORE_INPUTS[name]
    id_s = compute_score(name, {key: id_logits})
    ood_s = compute_score(name, {key: ood_logits})
    assert ood_s.min() > id_s.max()


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (5, 4), elements=st.floats(-30, 30)))
def test_softmax_scores_are_shift_invariant_and_bounded(z):
    shifted = z + 7.5
    np.testing.assert_allclose(msp_score(z), msp_score(shifted), atol=1e-9)
    np.testing.assert_allclose(xent_score(z), xent_score(shifted), atol=1e-9)
    np.testing.assert_allclose(energy_score(shifted), energy_score(z) - 7.5, atol=1e-9)
    assert np.all(msp_score(z) <= -1 / 4 + 1e-12) and np.all(msp_score(z) >= -1)
    assert np.all(xent_score(z) <= -np.log(4) + 1e-9)


def test_compute_score_dispatches_every_name():
    rng = np.random.default_rng(1)
    outputs = {"logits": LOGITS, "odin_logits": LOGITS * 0.5, "features": rng.normal(size=(2, 3))}
    weight, bias = rng.normal(size=(3, 3)), rng.normal(size=3)
    outputs["knn_distance"] = np.array([0.25, 1.5])   # cached by the evaluate job (knn_score)
    stats = {"class_means": np.zeros((2, 3)), "precision": np.eye(3),
             "head_weight": weight, "head_bias": bias, "react_threshold": 0.0,
             "vim_origin": np.zeros(3), "vim_residual_basis": np.eye(3)[:, 2:], "vim_alpha": 2.0}
    f = outputs["features"]
    expected = {
        "msp": msp_score(LOGITS),
        "xent": xent_score(LOGITS),
        "energy": energy_score(LOGITS),
        "maxlogit": maxlogit_score(LOGITS),
        "odin": msp_score(LOGITS * 0.5),
        "mahalanobis": (outputs["features"] ** 2).sum(axis=1),
        "knn": np.array([0.25, 1.5]),
        "vim": 2.0 * np.abs(f[:, 2]) - logsumexp(f @ weight.T + bias, axis=1),
        "react": energy_score(np.minimum(f, 0.0) @ weight.T + bias),
        "gen": (softmax(LOGITS, axis=1) ** 0.1 * (1 - softmax(LOGITS, axis=1)) ** 0.1).sum(axis=1),
    }
    assert set(SCORE_NAMES) == set(expected)
    for name in SCORE_NAMES:
        np.testing.assert_allclose(compute_score(name, outputs, stats), expected[name], rtol=1e-12)


def test_compute_score_rejects_unknown_name_and_missing_inputs():
    with pytest.raises(ValueError, match="msq.*allowed: msp"):
        compute_score("msq", {"logits": LOGITS})
    with pytest.raises(KeyError, match="odin_logits"):
        compute_score("odin", {"logits": LOGITS})
    with pytest.raises(ValueError, match="train_stats"):
        compute_score("mahalanobis", {"features": np.zeros((2, 3))})


# ---- ODIN ---------------------------------------------------------------------------


def test_odin_with_no_perturbation_and_unit_temperature_is_msp():
    model = TinyNet().eval()
    x = images(5)
    z_odin = odin_logits(model, x, temperature=1.0, epsilon=0.0).numpy()
    with torch.no_grad():
        z = model(x).numpy()
    np.testing.assert_allclose(odin_score(z_odin), msp_score(z), rtol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 1000.0])
def test_odin_perturbation_raises_temperature_scaled_max_softmax(temperature):
    model = TinyNet().eval()
    x = images(8, seed=3)
    with torch.no_grad():
        p_before = softmax(model(x).numpy() / temperature, axis=1)
    predicted = p_before.argmax(axis=1)
    rows = np.arange(len(predicted))
    p_after = softmax(odin_logits(model, x, temperature, 0.0014).numpy(), axis=1)
    assert np.all(p_after.max(axis=1) > p_before.max(axis=1))
    assert np.all(p_after.argmax(axis=1) == predicted)
    # A step the other way lowers the predicted class's probability: the sign matters.
    p_against = softmax(odin_logits(model, x, temperature, -0.0014).numpy(), axis=1)
    assert np.all(p_against[rows, predicted] < p_before[rows, predicted])


def test_odin_matches_closed_form_gradient_of_a_linear_model():
    # For z = W x + b: grad_x log S_yhat(z / T) = (W_yhat - sum_c p_c W_c) / T.
    g = torch.Generator().manual_seed(5)
    weight = torch.randn((4, 28 * 28), generator=g, dtype=torch.float64) * 0.05
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    model = LinearNet(weight, bias)
    x = images(3, seed=7)
    temperature, eps = 10.0, 0.01
    z = (x.flatten(1) @ weight.T + bias).numpy()
    p = softmax(z / temperature, axis=1)
    w = weight.numpy()
    grad_log_s = (w[z.argmax(axis=1)] - p @ w) / temperature
    x_tilde = x.flatten(1).numpy() + eps * np.sign(grad_log_s)
    expected = (x_tilde @ w.T + bias.numpy()) / temperature
    np.testing.assert_allclose(odin_logits(model, x, temperature, eps).numpy(), expected, rtol=1e-10)


def test_odin_leaves_model_parameters_without_gradients():
    model = TinyNet().eval()
    out = odin_logits(model, images(2))
    assert not out.requires_grad
    assert all(p.grad is None for p in model.parameters())


# ---- Mahalanobis --------------------------------------------------------------------


def test_mahalanobis_matches_closed_form_on_gaussian_features():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0, 0.0], [4.0, -1.0, 2.0], [-3.0, 3.0, 1.0]])
    a = rng.normal(size=(3, 3))
    covariance = a @ a.T + 0.5 * np.eye(3)
    labels = np.repeat(np.arange(3), 4000)
    feats = means[labels] + rng.multivariate_normal(np.zeros(3), covariance, size=labels.size)

    stats = fit_mahalanobis(feats, labels)
    np.testing.assert_allclose(stats["class_means"], means, atol=0.1)
    np.testing.assert_allclose(stats["precision"], np.linalg.inv(covariance), rtol=0.1, atol=0.05)

    # Score with the true parameters against the closed form, point by point.
    test = rng.normal(size=(6, 3)) * 3
    precision = np.linalg.inv(covariance)
    closed_form = np.array(
        [min((t - m) @ precision @ (t - m) for m in means) for t in test]
    )
    np.testing.assert_allclose(mahalanobis_score(test, means, precision), closed_form, rtol=1e-10)
    # A class mean itself is at distance 0.
    np.testing.assert_allclose(mahalanobis_score(means, means, precision), 0.0, atol=1e-10)


def test_mahalanobis_known_unit_covariance_values():
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    feats = np.array([[3.0, 4.0], [9.0, 1.0]])
    # distances^2: (25, 65) -> 25; (82, 2) -> 2
    np.testing.assert_allclose(mahalanobis_score(feats, means, np.eye(2)), [25.0, 2.0])


def test_fit_mahalanobis_tolerates_dead_feature_dimensions():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 50)
    feats = np.column_stack([rng.normal(size=100) + labels * 3, np.zeros(100)])
    stats = fit_mahalanobis(feats, labels)
    assert np.isfinite(stats["precision"]).all()
    assert stats["precision"][1, 1] == 0.0
    scores = compute_score("mahalanobis", {"features": feats}, stats)
    assert np.isfinite(scores).all() and (scores >= 0).all()


def test_fit_mahalanobis_rejects_missing_class_and_bad_shapes():
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        fit_mahalanobis(np.zeros((4, 2)), np.array([0, 0, 2, 2]))
    with pytest.raises(ValueError, match="labels"):
        fit_mahalanobis(np.zeros((4, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="refit"):
        mahalanobis_score(np.zeros((2, 3)), np.zeros((2, 4)), np.eye(4))


def test_mahalanobis_ranks_far_features_higher():
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1, 2], 200)
    means = np.eye(3) * 5
    feats = means[labels] + rng.normal(size=(600, 3))
    stats = fit_mahalanobis(feats, labels)
    id_s = compute_score("mahalanobis", {"features": means[[0, 1, 2]] + 0.1}, stats)
    ood_s = compute_score("mahalanobis", {"features": np.full((3, 3), -20.0)}, stats)
    assert ood_s.min() > id_s.max()
