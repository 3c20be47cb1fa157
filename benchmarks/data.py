"""MNIST-sized benchmark data made offline from scikit-learn's bundled digits.

    from benchmarks.data import jittered_digits, auxiliary_images
    images, labels = jittered_digits(60_000, seed=0)   # uint8 [N, 28, 28], int64 [N]
    aux = auxiliary_images(images, 20_000, seed=1)     # uint8 [M, 28, 28], OE outliers

The 1,797 bundled 8x8 digits are scaled into MNIST's 28x28 frame (lib.data.synthetic.digits_28)
and each copy gets its own random affine jitter (rotation within +-12 degrees, scale
0.9-1.1, shift within +-2 pixels, bilinear), so a 60,000-image epoch holds no two equal
pictures. Speed does not depend on the pictures, only on their number and size; the
jitter keeps the data realistic enough for the accuracies the GPU check prints.
"""
import numpy as np
import torch
import torch.nn.functional as F

from lib.data.synthetic import digits_28, make_jigsaw


def _bundled_digits():
    from sklearn.datasets import load_digits
    bunch = load_digits()
    return digits_28(bunch.images), bunch.target.astype(np.int64)


def jittered_digits(n, seed=0, chunk=8192):
    """n uint8 pictures [n, 28, 28] and their labels, each a bundled digit under its own affine jitter."""
    base, base_labels = _bundled_digits()
    rng = np.random.default_rng(seed)
    pick = rng.integers(len(base), size=n)
    angle = np.radians(rng.uniform(-12, 12, n))
    scale = rng.uniform(0.9, 1.1, n)
    shift = rng.uniform(-2, 2, (n, 2)) * (2 / 28)  # pixels -> affine_grid's [-1, 1] units
    out = np.empty((n, 28, 28), dtype=np.uint8)
    for first in range(0, n, chunk):
        part = slice(first, min(first + chunk, n))
        cos, sin = np.cos(angle[part]) / scale[part], np.sin(angle[part]) / scale[part]
        theta = torch.from_numpy(np.stack([np.stack([cos, -sin, shift[part, 0]], 1),
                                           np.stack([sin, cos, shift[part, 1]], 1)], 1)).float()
        x = torch.from_numpy(base[pick[part]]).float()[:, None]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[part] = moved[:, 0].round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out, base_labels[pick]


def auxiliary_images(images, n, seed=1):
    """n OE outlier pictures: 7x7 tiles of the given digits reshuffled (lib.data.synthetic.make_jigsaw)."""
    return make_jigsaw(id_arrays={"x_train": images}, seed=seed, size=n)["x_train"]

