"""The registry of data sets, and the `prepare` entry point of the generated ones.

Every set is stored as results/data/<name>.npz with uint8 images [N, 28, 28] (white on
black, like MNIST) and int64 labels (-1 where a set has none). In-distribution sets
hold x_train/y_train/x_test/y_test; OOD and auxiliary sets hold x_test/y_test
(the OE auxiliary set holds x_train/y_train).

    python -m lib.data.registry digits --out results/data/digits.npz --seed 0
    python -m lib.data.registry gaussian --out results/data/gaussian.npz --seed 0 --size 2000
    python -m lib.data.registry negated --id results/data/digits.npz --out results/data/negated.npz

    from lib.data.registry import DATASETS, make_dataset, is_downloaded, origin, ood_groups
    arrays = make_dataset("blobs", seed=0, size=100)   # {"x_test": uint8 [100,28,28], "y_test": ...}
    origin("cifar10_gray")                             # "80 Million Tiny Images"
    ood_groups(cfg)                                    # {"fashion_mnist": "near", "gaussian": "far", ...}

DATASETS names every set the workflow knows, generated and downloaded, with its source
and licence line. Generated and bundled sets are made by lib.data.synthetic; downloaded
sets (mnist, fashion_mnist, kmnist, omniglot, cifar10_gray, notmnist, emnist_letters,
tiny300k) are fetched and converted by lib.data.real. Which test sets count as seen in
training: lib.data.leaks; the validation split: lib.data.splits. Every set that can be a
test OOD set carries a `group`, near or far (OOD_GROUPS); ood_groups(cfg) applies the config's
overrides. An extension file adds a generated OOD set by name (docs/extensions.md):

    register_ood_set("stripes", make_stripes, source="generated: random stripes", group="far")
"""
import argparse
import functools

import numpy as np

from lib.common import derive_seed, load_npz, save_npz_atomic, setup_logging
from lib.config import RegistrationError, add_extension_argument, claim_name, load_extensions
from lib.data.splits import validation_count
from lib.data.synthetic import (make_bernoulli, make_blobs, make_digits, make_gaussian, make_jigsaw, make_negated,
                                make_photos, make_uniform)


# name -> how to make it, what it needs, where it comes from. Downloaded sets (download=True)
# have no `make`: lib.data.real fetches and converts them, adding the files and URLs.
DATASETS = {
    "digits": dict(make=make_digits, role="in_distribution", needs_id=False,
                   source="scikit-learn load_digits (UCI optdigits, 1,797 8x8 images)",
                   licence="CC BY 4.0 (UCI ML repository)"),
    "gaussian": dict(make=make_gaussian, role="ood", group="far", needs_id=False,
                     source="generated: clip(N(0.5, 0.5), 0, 1)", licence="generated"),
    "bernoulli": dict(make=make_bernoulli, role="ood", group="far", needs_id=False,
                      source="generated: pixels in {0, 1}, p = 0.5", licence="generated"),
    "blobs": dict(make=make_blobs, role="ood", group="far", needs_id=False,
                  source="generated: Bernoulli(0.7), blur sigma 1.5, threshold 0.75", licence="generated"),
    "uniform": dict(make=make_uniform, role="ood", group="far", needs_id=False,
                    source="generated: U(0, 1)", licence="generated"),
    "negated": dict(make=make_negated, role="ood", group="far", needs_id=True,
                    source="255 - x of the in-distribution test set", licence="as the in-distribution set"),
    "photos": dict(make=make_photos, role="ood", group="far", needs_id=False,
                   source="patches of scikit-learn's sample photos (china.jpg, flower.jpg)",
                   licence="scikit-learn sample images (public)"),
    "jigsaw": dict(make=make_jigsaw, role="auxiliary", needs_id=True,
                   source="in-distribution training images, 7x7 tiles shuffled", licence="as the in-distribution set"),
}


def _downloaded(role, splits, origin, title, source, size, licence, citation, group=None):
    """A registry entry of a real data set; `origin` is the image collection it was drawn from,
    `group` its OOD group (near or far) when it can be a test OOD set."""
    entry = dict(make=None, role=role, needs_id=False, download=True, splits=splits, origin=origin, title=title,
                 source=source, size=size, licence=licence, citation=citation)
    return {**entry, "group": group} if group else entry


DATASETS.update({
    "mnist": _downloaded(
        "in_distribution", ("train", "test"), "MNIST", "MNIST", "torchvision.datasets.MNIST", "11 MiB",
        "No licence stated by the authors.",
        "Y. LeCun, C. Cortes, C. J. C. Burges: The MNIST database of handwritten digits (1998).", group="near"),
    "fashion_mnist": _downloaded(
        "ood", ("train", "test"), "Fashion-MNIST", "Fashion-MNIST", "torchvision.datasets.FashionMNIST",
        "29 MiB", "MIT (Zalando SE).",
        "H. Xiao, K. Rasul, R. Vollgraf: Fashion-MNIST, arXiv:1708.07747 (2017).", group="near"),
    "kmnist": _downloaded(
        "ood", ("train", "test"), "Kuzushiji-MNIST", "Kuzushiji-MNIST", "torchvision.datasets.KMNIST", "20 MiB",
        "CC BY-SA 4.0 (ROIS-DS CODH).",
        "T. Clanuwat et al.: Deep Learning for Classical Japanese Literature, arXiv:1812.01718 (2018).", group="near"),
    "omniglot": _downloaded(
        "ood", ("test",), "Omniglot", "Omniglot (evaluation alphabets)", "torchvision.datasets.Omniglot",
        "6 MiB", "MIT (brendenlake/omniglot).",
        "B. M. Lake, R. Salakhutdinov, J. B. Tenenbaum: Human-level concept learning through probabilistic "
        "program induction, Science 350 (2015).", group="near"),
    # CIFAR-10 is a labelled subset of 80 Million Tiny Images, like the 300K random images
    # (which had CIFAR's classes removed): OE on tiny300k has seen photos from CIFAR's source.
    "cifar10_gray": _downloaded(
        "ood", ("test",), "80 Million Tiny Images", "CIFAR-10 test split, grey", "torchvision.datasets.CIFAR10",
        "163 MiB", "No licence stated by the authors.",
        "A. Krizhevsky: Learning Multiple Layers of Features from Tiny Images, tech. report (2009).", group="far"),
    "notmnist": _downloaded(
        "ood", ("test",), "notMNIST", "notMNIST (small)", "yaroslavvb.com notMNIST archive", "8 MiB",
        "No licence stated; glyphs rendered from publicly available fonts.",
        "Y. Bulatov: notMNIST dataset (2011), http://yaroslavvb.blogspot.com/2011/09/notmnist-dataset.html.",
        group="near"),
    "emnist_letters": _downloaded(
        "ood", ("train", "test"), "EMNIST letters", "EMNIST letters", "torchvision.datasets.EMNIST",
        "536 MiB (all EMNIST splits in one zip)", "No licence stated; derived from NIST Special Database 19.",
        "G. Cohen, S. Afshar, J. Tapson, A. van Schaik: EMNIST, arXiv:1702.05373 (2017).", group="near"),
    "tiny300k": _downloaded(
        "auxiliary", ("train",), "80 Million Tiny Images", "300K Random Images (OE auxiliary set)",
        "Outlier Exposure release", "879 MiB",
        "No licence stated; a cleaned subset of 80 Million Tiny Images, which its authors withdrew in 2020.",
        "D. Hendrycks, M. Mazeika, T. Dietterich: Deep Anomaly Detection with Outlier Exposure, ICLR (2019)."),
})


# OOD groups, after OpenOOD v1.5's MNIST benchmark (configs/datasets/mnist/mnist_ood.yml:
# notMNIST and Fashion-MNIST near, CIFAR-10, textures, Tiny ImageNet and Places365 far):
# near = other handwritten or 28x28 object sets, whose low-level statistics resemble
# digits; far = photos and generated noise. The config key ood_groups overrides a set's group.
OOD_GROUPS = ("near", "far")


def _can_be_ood(name):
    """An OOD set of the registry, or a set with a group (an in-distribution set that may be tested as OOD)."""
    return name in DATASETS and (DATASETS[name]["role"] == "ood" or "group" in DATASETS[name])


def ood_group_problems(cfg):
    """What is wrong with the config key ood_groups, in lib.config's message form."""
    problems = []
    for name, group in (cfg.get("ood_groups") or {}).items():
        if not _can_be_ood(name):
            known = sorted(n for n in DATASETS if _can_be_ood(n))
            problems.append(f"config key 'ood_groups': {name!r} is not an OOD set of the registry "
                            f"(lib/data/registry.py DATASETS); allowed: {', '.join(known)}")
        elif group not in OOD_GROUPS:
            problems.append(f"config key 'ood_groups.{name}': {group!r} is not an OOD group; allowed: "
                            f"{', '.join(OOD_GROUPS)}")
    for name in cfg.get("ood_sets", ()):
        if name in DATASETS and "group" not in DATASETS[name] and name not in (cfg.get("ood_groups") or {}):
            problems.append(f"config key 'ood_groups': the OOD set {name!r} has no group; add "
                            f"`{name}: near` or `{name}: far` under ood_groups, or a group to its registry entry")
    return problems


def ood_groups(cfg):
    """{OOD set: 'near' or 'far'} for every set of cfg['ood_sets'], in their order: the
    registry's group unless cfg['ood_groups'] overrides it (checked by ood_group_problems)."""
    if problems := ood_group_problems(cfg):
        raise ValueError("; ".join(problems))
    overrides = cfg.get("ood_groups") or {}
    return {name: overrides[name] if name in overrides else DATASETS[name]["group"] for name in cfg["ood_sets"]}


def sets_of_group(groups):
    """{group: [sets]} of an ood_groups() mapping, every group of OOD_GROUPS present (maybe empty)."""
    return {group: [name for name, g in groups.items() if g == group] for group in OOD_GROUPS}


# Names of evaluation sets other than the data sets (lib.layout): not available to extensions.
RESERVED_SET_NAMES = {"id_test": None, "id_val": None, "mixing": None, "mnist_c": None}


def _checked_images(name, make_images, seed, size, **_):
    """An extension's images as a stored OOD set: uint8 [N, 28, 28], labels -1."""
    x = np.asarray(make_images(seed=seed, size=size), dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) == 0:
        raise ValueError(f"OOD set {name!r}: its function returned shape {x.shape}; it must return images "
                         "[N, 28, 28] (N >= 1)")
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"OOD set {name!r}: its function returned values outside [0, 1] (min {np.nanmin(x)}, "
                         f"max {np.nanmax(x)}, or not finite); return grey levels in [0, 1], white on black")
    images = np.round(x * 255).astype(np.uint8)
    return {"x_test": images, "y_test": np.full(len(images), -1, dtype=np.int64)}


def register_ood_set(name, make_images, source, licence="generated", group="far"):
    """Make `make_images(seed, size) -> float [N, 28, 28] in [0, 1]` the generated OOD set `name`.

    `group` is its OOD group, "near" (handwriting-like, digit-like statistics) or "far"
    (noise, photos, patterns: most generated sets); the config key ood_groups overrides it.

    The prepare job calls it with the study's seed for this set and `synthetic_size`, and
    stores the images as results/data/<name>.npz like the built-in generated sets; `source`
    and `licence` describe it in DATASETS like theirs.
    """
    if not callable(make_images):
        raise RegistrationError(f"register_ood_set({name!r}): {make_images!r} is not a function")
    if name in RESERVED_SET_NAMES or str(name).startswith("mnistc_"):
        raise RegistrationError(f"OOD set {name!r}: the name is taken by an evaluation set of the workflow; "
                                "choose another name")
    if group not in OOD_GROUPS:
        raise RegistrationError(f"OOD set {name!r}: group {group!r} is not one of {', '.join(OOD_GROUPS)}")
    entry = dict(make=functools.partial(_checked_images, name, make_images), role="ood", needs_id=False,
                 source=str(source), licence=str(licence), group=group)
    claim_name("ood_sets", name, [(DATASETS, entry)])


# Training images of each in-distribution set, before train.val_fraction of them is held out
# (digits: make_digits' fixed 80 % split of 1,797; the others: their published training split).
TRAIN_IMAGES = {"digits": 1437, "mnist": 60000, "fashion_mnist": 60000, "kmnist": 60000}


def config_problems_with_data(cfg):
    """What a validated config asks that its data cannot give, in lib.config's message form.

    Checked before any job runs, so that a batch larger than the training split is not first
    met as a reshape error inside the train job.
    """
    problems = ood_group_problems(cfg)
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
    parser.add_argument("name", help="a generated set of DATASETS (or one an --extension registers)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=2000, help="images for generated sets")
    parser.add_argument("--id", dest="id_npz", help="in-distribution npz (for sets made from it)")
    parser.add_argument("--log")
    add_extension_argument(parser)
    args = parser.parse_args(argv)
    log = setup_logging(args.log)
    load_extensions(args.extension)
    id_arrays = load_npz(args.id_npz) if args.id_npz else None
    arrays = make_dataset(args.name, seed=args.seed, size=args.size, id_arrays=id_arrays)
    save_npz_atomic(args.out, **arrays)
    log.info("%s: %s", args.name, {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    # Through the module's imported copy, not this __main__ one: that copy's DATASETS is the
    # table the extension files register into (they import lib.data.registry).
    from lib.data.registry import main as registry_main
    registry_main()
