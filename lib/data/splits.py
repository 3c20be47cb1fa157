"""The held-out validation split of an in-distribution training set.

    from lib.data.splits import validation_split
    train_idx, val_idx = validation_split(len(arrays["x_train"]), seed=0, fraction=0.1)
"""
import numpy as np

from lib.common import derive_seed


def validation_split(n, seed, fraction):
    """Indices (train, val) of a fixed held-out split of the training set.

    Made from the study seed alone, so every model of the grid holds out the same images
    and the temperature fitted on them is comparable across models.
    """
    rng = np.random.default_rng(derive_seed(seed, "validation-split"))
    order = rng.permutation(n)
    n_val = validation_count(n, fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def validation_count(n, fraction):
    """Images validation_split holds out of n."""
    return int(round(n * fraction))
