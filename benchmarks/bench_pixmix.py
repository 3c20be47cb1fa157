"""Speed of the batched PixMix against the per-sample PIL reference, in one process.

    from benchmarks.bench_pixmix import bench_pixmix, format_table
    result = bench_pixmix(n_images=32768, batch_size=8192)
    result["ratio"]                     # batched images/s (all cores) / reference images/s, best times
    result["ratio_median"]              # the same from the median times
    result["ratio_one_thread"]          # the same with the batched version on one core
    print(format_table(result))

    python -m benchmarks.bench_pixmix [--n-images N] [--batch-size B] [--threads T]

Both versions see the same images (scikit-learn's bundled 8x8 digits, resampled into
MNIST's 28x28 frame) and the same fractal mixing set, with the defaults k=4, beta=3,
severity=3. They run alternately `repeats` times and each keeps its best time, which
discounts interference from other processes on a shared machine; the ratio of the
median times is reported beside it (`ratio_median`), and every repeat's speed is kept
(`repeat_images_per_s`). The reference is timed on the first n_reference images and
scaled to images per second.

The reference handles one picture at a time on one core. The batched version runs
twice: with `threads` torch threads (default: torch's own, one per core), among which
pixmix_batch shares each batch, and on one thread, so that both the whole machine's
ratio and the per-core ratio are on record. The default batch, 8192, is what a CPU
training job augments per call (lib.train.loop.CHUNK_IMAGES).

Large CPU batches page-fault their freed buffers back in on every call unless glibc
keeps them: run it as `make bench` does (the MALLOC_* variables of JOB_ENV) for the
numbers a training job sees. With CUDA available it also times one 60,000-image epoch
of augmentation on the GPU (`gpu_epoch_s`).
"""
import argparse
import os
import statistics
import time

import numpy as np
import torch
from PIL import Image

from lib.data.mixing import fractal_images
from lib.train.pixmix import pixmix_batch
from lib.train.pixmix_reference import pixmix_reference_batch

EPOCH_IMAGES = 60_000


def digit_images(n, seed):
    """n uint8 [28,28] digits: scikit-learn's 8x8 digits scaled to 20x20, centred as in MNIST."""
    from sklearn.datasets import load_digits

    small = load_digits().images  # values 0..16
    big = np.zeros((len(small), 28, 28), dtype=np.uint8)
    for i, digit in enumerate(small):
        picture = Image.fromarray((digit * (255 / 16)).astype(np.uint8)).resize((20, 20), Image.BILINEAR)
        big[i, 4:24, 4:24] = np.asarray(picture)
    return big[np.random.default_rng(seed).integers(len(big), size=n)]


def _seconds(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def epoch_seconds(images, mixing, batch_size, seed, device, epoch_images=EPOCH_IMAGES):
    """Seconds for pixmix_batch to augment one epoch of epoch_images (uint8 `images`, tiled
    as needed) in batches of batch_size, on `device`, after one warm-up batch; waits for a
    GPU to finish."""
    device = torch.device(device)
    tiles = -(-epoch_images // len(images))
    x = torch.from_numpy(np.tile(images, (tiles, 1, 1))[:epoch_images]).to(device).float().div_(255)[:, None]
    pictures = torch.from_numpy(mixing).to(device).float().div_(255)[:, None]
    generator = torch.Generator(device=device).manual_seed(seed)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    pixmix_batch(x[:batch_size], pictures, generator)  # warm-up: kernels, allocator
    synchronize()
    start = time.perf_counter()
    for first in range(0, epoch_images, batch_size):
        pixmix_batch(x[first:first + batch_size], pictures, generator)
    synchronize()
    return time.perf_counter() - start


def bench_pixmix(n_images=32768, batch_size=8192, n_reference=2000, repeats=10, n_mixing=1000,
                 threads=None, seed=0):
    """Images per second of pixmix_batch (CPU; all threads and one) and of the per-sample
    reference, and their ratios."""
    images = digit_images(n_images, seed)
    mixing = fractal_images(n_mixing, seed)
    reference_images = images[:min(n_reference, n_images)]
    x = torch.from_numpy(images).float().div_(255)[:, None]
    pictures = torch.from_numpy(mixing).float().div_(255)[:, None]
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    previous_threads = torch.get_num_threads()
    used_threads = threads or previous_threads

    def run_batched(on_threads):
        torch.set_num_threads(on_threads)
        for first in range(0, n_images, batch_size):
            pixmix_batch(x[first:first + batch_size], pictures, generator)

    def run_reference():
        pixmix_reference_batch(reference_images, mixing, rng)

    try:
        for on_threads in {used_threads, 1}:  # warm-up: helper threads, allocator
            run_batched(on_threads)
        times = {"reference": [], "batched": [], "one_thread": []}
        for _ in range(repeats):
            times["reference"].append(_seconds(run_reference))
            times["batched"].append(_seconds(lambda: run_batched(used_threads)))
            times["one_thread"].append(_seconds(lambda: run_batched(1)))
    finally:
        torch.set_num_threads(previous_threads)

    # images per second of every repeat, in the order they ran
    rates = {"reference": [len(reference_images) / s for s in times["reference"]],
             "batched": [n_images / s for s in times["batched"]],
             "one_thread": [n_images / s for s in times["one_thread"]]}
    best = {name: max(values) for name, values in rates.items()}
    typical = {name: statistics.median(values) for name, values in rates.items()}
    gpu_epoch = epoch_seconds(images, mixing, batch_size, seed, "cuda") if torch.cuda.is_available() else None
    return {
        "n_images": n_images, "batch_size": batch_size, "threads": used_threads, "repeats": repeats,
        "reference_images_per_s": best["reference"], "batched_images_per_s": best["batched"],
        "ratio": best["batched"] / best["reference"],
        "batched_one_thread_images_per_s": best["one_thread"], "ratio_one_thread": best["one_thread"] / best["reference"],
        "ratio_median": typical["batched"] / typical["reference"],
        "ratio_one_thread_median": typical["one_thread"] / typical["reference"],
        "repeat_images_per_s": rates,
        "gpu_epoch_s": gpu_epoch, "malloc_tuned": "MALLOC_TRIM_THRESHOLD_" in os.environ,
    }


def format_table(result):
    gpu = "n/a" if result["gpu_epoch_s"] is None else f"{result['gpu_epoch_s']:.2f} s"
    return (f"pixmix | reference {result['reference_images_per_s']:,.0f} img/s"
            f" | batched {result['batched_images_per_s']:,.0f} img/s | ratio {result['ratio']:.1f}x"
            f" (median of the repeats {result['ratio_median']:.1f}x)"
            f" | batch {result['batch_size']}, {result['threads']} threads"
            f" | on one thread {result['batched_one_thread_images_per_s']:,.0f} img/s,"
            f" ratio {result['ratio_one_thread']:.1f}x"
            f"{'' if result['malloc_tuned'] else ' | glibc malloc untuned'}"
            f" | GPU 60k-image epoch {gpu}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pixmix", description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=32768)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--n-reference", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--n-mixing", type=int, default=1000, help="fractal mixing pictures")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the batched run (default: torch's own); it also runs on one")
    args = parser.parse_args(argv)
    result = bench_pixmix(n_images=args.n_images, batch_size=args.batch_size, n_reference=args.n_reference,
                          repeats=args.repeats, n_mixing=args.n_mixing, threads=args.threads)
    print(format_table(result))
    return result


if __name__ == "__main__":
    main()
