"""Training: the OE loss, the split, augmentation, determinism and resume."""
import math
import os

import numpy as np
import pytest
import torch

from lib.train.augment import saltpepper_batch
from lib.config import validate_config
from lib.data.registry import make_dataset
from lib.data.splits import validation_split
from lib.train.loop import NonFiniteLoss, oe_loss, train
from lib.train.models import load_model_file
from tests.helpers.faults import nan_loss_at_step


def test_oe_loss_on_known_logits():
    logits_id = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    logits_ood = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    # logsumexp - mean: flat logits give log 2; [3, 0] gives log(e^3 + 1) - 1.5
    oe_term = (math.log(2) + (math.log(math.exp(3) + 1) - 1.5)) / 2
    got = oe_loss(logits_id, labels, logits_ood, lam=0.5).item()
    assert got == pytest.approx(ce + 0.5 * oe_term, rel=1e-6)
    assert oe_loss(logits_id, labels, None, 0.5).item() == pytest.approx(ce, rel=1e-6)


def test_validation_split_is_fixed_disjoint_and_complete():
    tr, va = validation_split(100, seed=0, fraction=0.1)
    assert len(va) == 10 and len(tr) == 90 and set(tr).isdisjoint(va) and set(tr) | set(va) == set(range(100))
    tr2, va2 = validation_split(100, seed=0, fraction=0.1)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, validation_split(100, seed=1, fraction=0.1)[1])


def test_saltpepper_replaces_about_amount_of_pixels_half_white_half_black():
    g = torch.Generator().manual_seed(0)
    x = torch.full((64, 1, 28, 28), 0.5)
    out = saltpepper_batch(x, g, amount=0.2)
    assert out.shape == x.shape and x.eq(0.5).all()  # input untouched
    assert abs((out != 0.5).float().mean().item() - 0.2) < 0.01
    assert abs((out == 1).float().mean().item() - 0.1) < 0.01


def _tiny_cfg(**train):
    return validate_config({"train": {"model": "small_convnet", "epochs": 2, "batch_size": 64, **train}})


@pytest.fixture(scope="module")
def digits():
    d = make_dataset("digits")
    return {k: v[:400] if k.endswith("train") else v for k, v in d.items()}


def _weights(path):
    model, _ = load_model_file(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_is_deterministic_and_resume_gives_identical_weights(tmp_path, digits):
    cfg = _tiny_cfg()
    aux = make_dataset("jigsaw", size=200, id_arrays=make_dataset("digits"))
    paths = {n: (tmp_path / f"{n}.pt", tmp_path / f"{n}.csv", tmp_path / f"{n}.ckpt") for n in "abc"}
    for n in "ab":
        train(digits, "saltpepper", "oe", 1, cfg, *map(str, paths[n]), aux=aux)
    wa, wb = _weights(paths["a"][0]), _weights(paths["b"][0])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # Interrupt at the first step of epoch 2 (a poisoned loss), then resume from the
    # epoch-1 checkpoint: the weights must equal the uninterrupted run's.
    m, p, c = map(str, paths["c"])
    steps_per_epoch = 400 * 9 // 10 // 64
    with nan_loss_at_step(steps_per_epoch), pytest.raises(NonFiniteLoss, match="epoch 2, batch 1"):
        train(digits, "saltpepper", "oe", 1, cfg, m, p, c, aux=aux)
    assert os.path.exists(c) and not os.path.exists(m)
    train(digits, "saltpepper", "oe", 1, cfg, m, p, c, aux=aux)
    wc = _weights(m)
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    assert not os.path.exists(c)  # checkpoint removed once the model is written
