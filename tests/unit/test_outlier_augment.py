"""Outlier batches get the in-distribution augmentation by default (no shortcut for OE),
and `outlier_exposure.augment_outliers: false` keeps them unaugmented."""
import pytest
import torch

from lib.config import validate_config
from lib.train.augment import AUGMENTS
from lib.train.loop import training_chunks

AUGMENTED = [name for name in AUGMENTS if name != "none"]


def _outlier_rows(augment, augment_outliers):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    aux = torch.rand(12, 1, 28, 28, generator=g) * 0.5 + 0.25   # mid-grey: salt and pepper both show
    mixing = torch.rand(6, 1, 28, 28, generator=g)
    cfg = validate_config({"outlier_exposure": {"augment_outliers": augment_outliers}})
    batch, aux_batch = 16, 8
    rows = []
    for inputs, labels in training_chunks(x, y, torch.randperm(64, generator=g), batch, 4, augment, cfg,
                                          torch.Generator().manual_seed(1), mixing=mixing, aux=aux,
                                          aux_batch=aux_batch, steps_per_chunk=2):
        assert inputs.shape[1] == batch + aux_batch and labels.shape[1] == batch
        rows.append(inputs[:, batch:].flatten(0, 1))
    return torch.cat(rows), aux


def _is_one_of(row, originals):
    return any(torch.equal(row, a) for a in originals)


def test_the_default_augments_outliers():
    assert validate_config({})["outlier_exposure"]["augment_outliers"] is True


@pytest.mark.parametrize("augment", AUGMENTED)
def test_every_augmentation_reaches_the_outlier_batch_by_default(augment):
    rows, aux = _outlier_rows(augment, True)
    assert len(rows) == 32
    # PixMix returns a share of its pictures as they came (no operation, no mixing round),
    # as the reference does; the rest, and every salt-and-pepper picture, change.
    changed = sum(not _is_one_of(row, aux) for row in rows) / len(rows)
    assert changed > 0.6, f"{augment} changed only {changed:.0%} of the outlier images"
    if augment == "saltpepper":
        # about amount = 10% of each outlier's pixels are pure black or white; none were before
        share = ((rows == 0) | (rows == 1)).float().mean().item()
        assert 0.07 < share < 0.13


@pytest.mark.parametrize("augment", AUGMENTED)
def test_asymmetric_option_leaves_outliers_unaugmented(augment):
    rows, aux = _outlier_rows(augment, False)
    assert all(_is_one_of(row, aux) for row in rows)


def test_without_augmentation_outliers_pass_unchanged_either_way():
    for augment_outliers in (True, False):
        rows, aux = _outlier_rows("none", augment_outliers)
        assert all(_is_one_of(row, aux) for row in rows)
