"""The covariate-shifted in-distribution set of full-spectrum detection: every ID test image
once, under one of the 15 MNIST-C corruptions.

    python -m lib.data.shifted --corruptions-dir results/data/corruptions --seed 0 \
        --out results/data/id_shifted.npz

    from lib.data.shifted import shifted_test_set
    arrays = shifted_test_set({"fog": fog_arrays, "stripe": stripe_arrays, ...}, seed=0)
    arrays["x_test"], arrays["y_test"], arrays["corruption"]   # uint8 [N,28,28], int64 [N], int64 [N]

Full-spectrum OOD detection (Yang et al., "Full-Spectrum Out-of-Distribution Detection",
IJCV 2023, arXiv:2204.05306) counts covariate-shifted images of the known classes as
in-distribution. MNIST-C holds 15 x N corrupted images for the N clean test images; pooling
them all would make the ID side 15/16 corrupted, so that a full-spectrum AUROC would mostly
measure MNIST-C against the OOD set. Here each of the N test images appears once, under a
corruption drawn so that every corruption gets N/15 images (up to one): the ID side of
full-spectrum detection is then N clean + N corrupted images, half and half, with the
digits' class balance of the clean test set and every corruption weighing the same.
`corruption` holds each image's index into lib.data.mnist_c.CORRUPTIONS. The MNIST-C files
hold the corrupted ID test images in the test set's order (official and generated alike).
"""
import argparse

import numpy as np

from lib.common import derive_seed, load_npz, save_npz_atomic, setup_logging
from lib.data.mnist_c import CORRUPTIONS
from lib.layout import npz_in


def corruption_assignment(n_images, n_corruptions, seed):
    """int64 [n_images]: which corruption each test image gets; every corruption gets
    n_images // n_corruptions or one more images, in a seeded random order."""
    rng = np.random.default_rng(derive_seed(seed, "shifted"))
    return (rng.permutation(n_images) % n_corruptions).astype(np.int64)


def shifted_test_set(corrupted, seed):
    """{"x_test", "y_test", "corruption"} from {corruption: {"x_test", "y_test"}} of the 15 MNIST-C sets."""
    missing = [c for c in CORRUPTIONS if c not in corrupted]
    if missing:
        raise ValueError(f"the shifted test set needs all 15 MNIST-C corruptions; missing {missing}")
    sizes = {c: len(corrupted[c]["x_test"]) for c in CORRUPTIONS}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the MNIST-C sets differ in size ({sizes}); each should hold the corrupted ID test set: "
                         "delete results/data/corruptions and rerun the same snakemake command")
    n = sizes[CORRUPTIONS[0]]
    which = corruption_assignment(n, len(CORRUPTIONS), seed)
    x = np.stack([corrupted[CORRUPTIONS[k]]["x_test"][i] for i, k in enumerate(which)]) if n else \
        np.zeros((0, 28, 28), np.uint8)
    y = np.array([corrupted[CORRUPTIONS[k]]["y_test"][i] for i, k in enumerate(which)], dtype=np.int64)
    return {"x_test": x.astype(np.uint8), "y_test": y, "corruption": which}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corruptions-dir", required=True, help="folder of <corruption>.npz (results/data/corruptions)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    log = setup_logging(args.log)
    corrupted = {c: load_npz(npz_in(args.corruptions_dir, c), required=("x_test", "y_test")) for c in CORRUPTIONS}
    arrays = shifted_test_set(corrupted, args.seed)
    save_npz_atomic(args.out, **arrays)
    counts = np.bincount(arrays["corruption"], minlength=len(CORRUPTIONS))
    log.info("%s: %d images, per corruption %s", args.out, len(arrays["x_test"]), dict(zip(CORRUPTIONS, counts.tolist())))


if __name__ == "__main__":
    main()
