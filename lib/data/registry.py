"""Offline data sets: the registry, their generators, and the `prepare` entry point.

Every set is stored as results/data/<name>.npz with uint8 images [N, 28, 28] (white on
black, like MNIST) and int64 labels (-1 where a set has none). In-distribution sets
hold x_train/y_train/x_test/y_test; OOD and auxiliary sets hold x_test/y_test
(the OE auxiliary set holds x_train/y_train).

    python -m lib.data.registry digits --out results/data/digits.npz --seed 0
    python -m lib.data.registry gaussian --out results/data/gaussian.npz --seed 0 --size 2000
    python -m lib.data.registry negated --id results/data/digits.npz --out results/data/negated.npz

    from lib.data.registry import make_dataset, leaked_sets
    arrays = make_dataset("blobs", seed=0, size=100)   # {"x_test": uint8 [100,28,28], "y_test": ...}
    leaked_sets(cfg)   # {"fashion_mnist": "shares its source ..."}: test sets seen in training

DATASETS names every set the workflow knows, generated and downloaded, with its source
and licence line; downloaded sets (mnist, fashion_mnist, kmnist, omniglot, cifar10_gray,
notmnist, emnist_letters, tiny300k) are fetched and converted by lib.data.real.
"""
import argparse

import numpy as np
from scipy import ndimage

from lib.common import derive_seed, load_npz, save_npz_atomic, setup_logging, write_json_atomic


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


# name -> how to make it, what it needs, where it comes from. Downloaded sets (download=True)
# have no `make`: lib.data.real fetches and converts them, adding the files and URLs.
DATASETS = {
    "digits": dict(make=make_digits, role="in_distribution", needs_id=False,
                   source="scikit-learn load_digits (UCI optdigits, 1,797 8x8 images)",
                   licence="CC BY 4.0 (UCI ML repository)"),
    "gaussian": dict(make=make_gaussian, role="ood", needs_id=False,
                     source="generated: clip(N(0.5, 0.5), 0, 1)", licence="generated"),
    "bernoulli": dict(make=make_bernoulli, role="ood", needs_id=False,
                      source="generated: pixels in {0, 1}, p = 0.5", licence="generated"),
    "blobs": dict(make=make_blobs, role="ood", needs_id=False,
                  source="generated: Bernoulli(0.7), blur sigma 1.5, threshold 0.75", licence="generated"),
    "uniform": dict(make=make_uniform, role="ood", needs_id=False,
                    source="generated: U(0, 1)", licence="generated"),
    "negated": dict(make=make_negated, role="ood", needs_id=True,
                    source="255 - x of the in-distribution test set", licence="as the in-distribution set"),
    "photos": dict(make=make_photos, role="ood", needs_id=False,
                   source="patches of scikit-learn's sample photos (china.jpg, flower.jpg)",
                   licence="scikit-learn sample images (public)"),
    "jigsaw": dict(make=make_jigsaw, role="auxiliary", needs_id=True,
                   source="in-distribution training images, 7x7 tiles shuffled", licence="as the in-distribution set"),
}


def _downloaded(role, splits, origin, title, source, size, licence, citation):
    """A registry entry of a real data set; `origin` is the image collection it was drawn from."""
    return dict(make=None, role=role, needs_id=False, download=True, splits=splits, origin=origin, title=title,
                source=source, size=size, licence=licence, citation=citation)


DATASETS.update({
    "mnist": _downloaded(
        "in_distribution", ("train", "test"), "MNIST", "MNIST", "torchvision.datasets.MNIST", "11 MiB",
        "No licence stated by the authors.",
        "Y. LeCun, C. Cortes, C. J. C. Burges: The MNIST database of handwritten digits (1998)."),
    "fashion_mnist": _downloaded(
        "ood", ("train", "test"), "Fashion-MNIST", "Fashion-MNIST", "torchvision.datasets.FashionMNIST",
        "29 MiB", "MIT (Zalando SE).",
        "H. Xiao, K. Rasul, R. Vollgraf: Fashion-MNIST, arXiv:1708.07747 (2017)."),
    "kmnist": _downloaded(
        "ood", ("train", "test"), "Kuzushiji-MNIST", "Kuzushiji-MNIST", "torchvision.datasets.KMNIST", "20 MiB",
        "CC BY-SA 4.0 (ROIS-DS CODH).",
        "T. Clanuwat et al.: Deep Learning for Classical Japanese Literature, arXiv:1812.01718 (2018)."),
    "omniglot": _downloaded(
        "ood", ("test",), "Omniglot", "Omniglot (evaluation alphabets)", "torchvision.datasets.Omniglot",
        "6 MiB", "MIT (brendenlake/omniglot).",
        "B. M. Lake, R. Salakhutdinov, J. B. Tenenbaum: Human-level concept learning through probabilistic "
        "program induction, Science 350 (2015)."),
    # CIFAR-10 is a labelled subset of 80 Million Tiny Images, like the 300K random images
    # (which had CIFAR's classes removed): OE on tiny300k has seen photos from CIFAR's source.
    "cifar10_gray": _downloaded(
        "ood", ("test",), "80 Million Tiny Images", "CIFAR-10 test split, grey", "torchvision.datasets.CIFAR10",
        "163 MiB", "No licence stated by the authors.",
        "A. Krizhevsky: Learning Multiple Layers of Features from Tiny Images, tech. report (2009)."),
    "notmnist": _downloaded(
        "ood", ("test",), "notMNIST", "notMNIST (small)", "yaroslavvb.com notMNIST archive", "8 MiB",
        "No licence stated; glyphs rendered from publicly available fonts.",
        "Y. Bulatov: notMNIST dataset (2011), http://yaroslavvb.blogspot.com/2011/09/notmnist-dataset.html."),
    "emnist_letters": _downloaded(
        "ood", ("train", "test"), "EMNIST letters", "EMNIST letters", "torchvision.datasets.EMNIST",
        "536 MiB (all EMNIST splits in one zip)", "No licence stated; derived from NIST Special Database 19.",
        "G. Cohen, S. Afshar, J. Tapson, A. van Schaik: EMNIST, arXiv:1702.05373 (2017)."),
    "tiny300k": _downloaded(
        "auxiliary", ("train",), "80 Million Tiny Images", "300K Random Images (OE auxiliary set)",
        "Outlier Exposure release", "879 MiB",
        "No licence stated; a cleaned subset of 80 Million Tiny Images, which its authors withdrew in 2020.",
        "D. Hendrycks, M. Mazeika, T. Dietterich: Deep Anomaly Detection with Outlier Exposure, ICLR (2019)."),
})


# Training images of each in-distribution set, before train.val_fraction of them is held out
# (digits: make_digits' fixed 80 % split of 1,797; the others: their published training split).
TRAIN_IMAGES = {"digits": 1437, "mnist": 60000, "fashion_mnist": 60000, "kmnist": 60000}


def config_problems_with_data(cfg):
    """What a validated config asks that its data cannot give, in lib.config's message form.

    Checked before any job runs, so that a batch larger than the training split is not first
    met as a reshape error inside the train job.
    """
    problems = []
    name, train = cfg["in_distribution"], cfg["train"]
    if name in TRAIN_IMAGES:
        images = TRAIN_IMAGES[name] - validation_count(TRAIN_IMAGES[name], train["val_fraction"])
        if train["batch_size"] > images:
            problems.append(
                f"config key 'train.batch_size': {train['batch_size']} is larger than the training split of "
                f"{name!r} ({images} images once train.val_fraction {train['val_fraction']} is held out); "
                f"use at most {images}")
    return problems


def is_downloaded(name):
    """True for real data sets (fetched by lib.data.real), False for generated or bundled ones."""
    return bool(DATASETS[name].get("download"))


def origin(name):
    """The image collection a set was drawn from; a generated set is its own origin."""
    return DATASETS[name].get("origin", name)


def leaked_sets(cfg):
    """{test OOD set: why it counts as seen in training} for a validated config.

    A test set is "seen in training" when it shares its origin with the Outlier-Exposure
    auxiliary set (and an OE variant is trained), or with the pictures of a PixMix mixing
    folder (`pixmix.mixing.shares_source_with`, when pixmix is trained on a folder).
    """
    seen = {}
    if any(o in ("oe", "oe_tune") for o in cfg["oe"]):
        aux = cfg["outlier_exposure"]["source"]
        seen[origin(aux)] = f"shares its source ({origin(aux)}) with the Outlier-Exposure set {aux}"
    mixing = cfg.get("pixmix", {}).get("mixing", {})
    if "pixmix" in cfg["augment"] and mixing.get("source") == "folder":
        for name in mixing.get("shares_source_with") or []:
            seen.setdefault(origin(name), f"shares its source ({origin(name)}) with the PixMix mixing folder")
    return {name: seen[origin(name)] for name in cfg["ood_sets"] if origin(name) in seen}


def write_leaks(cfg, path):
    """results/tables/leaks.json: {"seen_in_training": {set: reason}} for the report and readers."""
    write_json_atomic(path, {"seen_in_training": leaked_sets(cfg)})


def make_dataset(name, seed=0, size=2000, id_arrays=None):
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    if spec["make"] is None:
        raise ValueError(f"data set {name!r} is downloaded, not generated: prepare it with "
                         f"`python -m lib.data.real prepare {name} --data-dir DATA_DIR --out OUT.npz`")
    if spec["needs_id"] and id_arrays is None:
        raise ValueError(f"data set {name!r} is made from the in-distribution set: pass id_arrays")
    return spec["make"](seed=derive_seed(seed, "dataset", name), size=size, id_arrays=id_arrays)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(n for n in DATASETS if not is_downloaded(n)))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=2000, help="images for generated sets")
    parser.add_argument("--id", dest="id_npz", help="in-distribution npz (for sets made from it)")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    log = setup_logging(args.log)
    id_arrays = load_npz(args.id_npz) if args.id_npz else None
    arrays = make_dataset(args.name, seed=args.seed, size=args.size, id_arrays=id_arrays)
    save_npz_atomic(args.out, **arrays)
    log.info("%s: %s", args.name, {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main()


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
