"""The generated and bundled data sets: scikit-learn's digits in MNIST's frame, noise OOD sets
as in Outlier Exposure's MNIST tests, photo patches, and sets made from the in-distribution set.

    from lib.data.synthetic import make_gaussian, make_jigsaw, digits_28
    make_gaussian(seed=0, size=100)           # {"x_test": uint8 [100, 28, 28], "y_test": -1 labels}
    make_jigsaw(id_arrays, seed=0, size=200)  # {"x_train": shuffled 7x7 tiles of training digits, ...}

Every generator takes keyword arguments (seed, size, id_arrays; it ignores those it does not
use) and returns uint8 images [N, 28, 28], white on black, with int64 labels (-1 where a
set has none). lib.data.registry names them per set and derives each set's seed.
"""
import numpy as np
from scipy import ndimage


def digits_28(images_8x8):
    """scikit-learn's 8x8 digits (0..16) scaled into the central 20x20 box of a 28x28 frame.

    MNIST puts each digit's 20x20 bounding box in a 28x28 image; we do the same with
    bilinear upsampling (8 -> 20 px) and a 4-pixel black border, white ink on black.
    """
    x = np.asarray(images_8x8, dtype=np.float64) / 16.0
    up = ndimage.zoom(x, (1, 20 / 8, 20 / 8), order=1)
    frame = np.zeros((len(x), 28, 28), dtype=np.float64)
    frame[:, 4:24, 4:24] = np.clip(up, 0.0, 1.0)
    return np.round(frame * 255).astype(np.uint8)


def make_digits(seed=0, test_fraction=0.2, **_):
    """The bundled handwritten digits (1,797 images) with a fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    bunch = load_digits()
    x = digits_28(bunch.images)
    y = bunch.target.astype(np.int64)
    # The split is part of the data set's definition, so it does not move with the
    # study's seed: every seed of the study sees the same test images.
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=0)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _unlabelled(x01):
    x = np.round(np.clip(x01, 0.0, 1.0) * 255).astype(np.uint8)
    return {"x_test": x, "y_test": np.full(len(x), -1, dtype=np.int64)}


def make_gaussian(seed, size, **_):
    """clip(N(0.5, 0.5), 0, 1) per pixel, as in Outlier Exposure's MNIST tests."""
    rng = np.random.default_rng(seed)
    return _unlabelled(rng.normal(0.5, 0.5, size=(size, 28, 28)))


def make_bernoulli(seed, size, **_):
    """Each pixel 0 or 1 with p = 0.5 (OE's Rademacher/Bernoulli noise)."""
    rng = np.random.default_rng(seed)
    return _unlabelled(rng.binomial(1, 0.5, size=(size, 28, 28)).astype(np.float64))


def make_blobs(seed, size, **_):
    """Bernoulli(0.7) pixels, Gaussian blur sigma 1.5, values under 0.75 set to 0 (OE)."""
    rng = np.random.default_rng(seed)
    x = rng.binomial(1, 0.7, size=(size, 28, 28)).astype(np.float64)
    x = ndimage.gaussian_filter(x, sigma=(0, 1.5, 1.5))
    x[x < 0.75] = 0.0
    return _unlabelled(x)


def make_uniform(seed, size, **_):
    """U(0, 1) per pixel."""
    rng = np.random.default_rng(seed)
    return _unlabelled(rng.uniform(0.0, 1.0, size=(size, 28, 28)))


def make_negated(id_arrays, **_):
    """255 - x of the in-distribution test images: same shapes, inverted contrast."""
    x = 255 - id_arrays["x_test"]
    return {"x_test": x.astype(np.uint8), "y_test": np.full(len(x), -1, dtype=np.int64)}


def make_photos(seed, size, **_):
    """28x28 grey patches cut at random places and scales from scikit-learn's bundled photos."""
    from sklearn.datasets import load_sample_images
    rng = np.random.default_rng(seed)
    greys = [img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) for img in load_sample_images().images]
    out = np.empty((size, 28, 28), dtype=np.float64)
    which = rng.integers(len(greys), size=size)
    crop = rng.integers(28, 113, size=size)  # patch side before resizing: 1x to 4x zoom-out
    for i in range(size):  # 2 photos, cheap crops: not worth vectorising
        g = greys[which[i]]
        top = rng.integers(g.shape[0] - crop[i] + 1)
        left = rng.integers(g.shape[1] - crop[i] + 1)
        patch = g[top:top + crop[i], left:left + crop[i]]
        out[i] = ndimage.zoom(patch, 28 / crop[i], order=1)[:28, :28]
    return _unlabelled(out / 255.0)


def make_jigsaw(id_arrays, seed, size, **_):
    """Training digits cut into 7x7 tiles and reshuffled: digit strokes, no digit.

    An Outlier-Exposure auxiliary set that needs no download and shares nothing with the
    test OOD sets (it comes from the training split).
    """
    rng = np.random.default_rng(seed)
    x = id_arrays["x_train"]
    pick = x[rng.integers(len(x), size=size)]
    tiles = pick.reshape(size, 4, 7, 4, 7).transpose(0, 1, 3, 2, 4).reshape(size, 16, 7, 7)
    order = np.argsort(rng.random((size, 16)), axis=1)
    tiles = np.take_along_axis(tiles, order[:, :, None, None], axis=1)
    out = tiles.reshape(size, 4, 4, 7, 7).transpose(0, 1, 3, 2, 4).reshape(size, 28, 28)
    return {"x_train": out, "y_train": np.full(size, -1, dtype=np.int64)}
