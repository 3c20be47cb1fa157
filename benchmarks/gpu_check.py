"""The GPU check behind benchmarks/gpu_check.sh: the usual loop against ours, then the whole grid.

    python -m benchmarks.gpu_check                      # 60,000 images, 10 epochs, convnet, CUDA if present
    python -m benchmarks.gpu_check --images 512 --test-images 128 --epochs 1 --model small_convnet  # seconds, CPU

No download: the pictures are the bundled digits under random affine jitter
(benchmarks/data.py), the OE outliers their reshuffled tiles, the PixMix mixing set
generated fractals.

(a) One epoch of the plain training loop (no augmentation, no OE) written as PyTorch's
    examples/mnist writes it -- a Dataset with per-sample ToTensor and Normalize, a
    DataLoader (workers, pinned memory), a copy to the device per batch -- against one
    epoch of ours (lib.train.loop.run_epoch: the data resident on the device, batches by
    index), same model, batch and optimiser. Prints both images/s and the ratio (goal >= 20x
    on a GPU).
(b) The six models of the grid, {none, saltpepper, pixmix} x {baseline, oe}, each trained
    by lib.train.loop.train (checkpoints included) for --epochs epochs and evaluated by
    lib.evaluate.forward.evaluate on the in-distribution test and validation splits, four OOD sets
    (with ODIN logits) and 15 MNIST-C-sized sets. Prints per model the training time,
    images/s, peak GPU memory, evaluation time and test accuracy, then the total (goal:
    the whole grid in <= 60 s on one H100/H200-class GPU).
(c) One epoch of PixMix augmentation alone: pixmix_batch over the training pictures in
    the training loop's chunks (lib.train.loop.CHUNK_IMAGES: 16,384 on CUDA), with the fractal
    mixing set. Prints the seconds and images/s.

Writes the figures and the machine description to <out>/gpu_check.json.
"""
import argparse
import json
import logging
import os
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.bench_pixmix import epoch_seconds
from benchmarks.bench_training import PixMixDigits
from benchmarks.data import auxiliary_images, jittered_digits
from benchmarks.run import machine
from lib.common import derive_seed, pick_device, replace_atomic, save_npz_atomic
from lib.config import validate_config
from lib.data.corruptions import CORRUPTIONS
from lib.data.registry import make_dataset
from lib.data.splits import validation_split
from lib.evaluate.forward import evaluate
from lib.data.mixing import fractal_images
from lib.train.models import build_model, model_mflops, to_device_images, to_fast_layout
from lib.train.loop import CHUNK_IMAGES, _NoAutocast, make_optimizer, make_schedule, run_epoch, train, train_step

GRID = [(augment, oe) for augment in ("none", "saltpepper", "pixmix") for oe in ("baseline", "oe")]
OOD_SETS = ("gaussian", "blobs", "negated", "photos")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def usual_vs_ours(id_data, cfg, device, workers, seed):
    """(a): images/s of one epoch of the examples/mnist-style loop and of ours; same model."""
    tcfg = cfg["train"]
    batch = tcfg["batch_size"]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _NoAutocast()
    results = {}
    for name in ("usual", "ours"):
        torch.manual_seed(seed)
        model = build_model(tcfg["model"], 10).to(device)
        if name == "ours":
            model = to_fast_layout(model)
        optimizer = make_optimizer(model.parameters(), tcfg, tcfg["lr"])
        schedule = make_schedule(optimizer, "constant", 1)
        n = len(id_data["x_train"])
        steps = n // batch
        if name == "usual":
            loader = DataLoader(PixMixDigits(id_data["x_train"], id_data["y_train"], None, seed, pixmix=False),
                                batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                pin_memory=device.type == "cuda", persistent_workers=workers > 0)

            def epoch():
                for x, y in loader:
                    train_step(model, optimizer, schedule, x.to(device, non_blocking=True),
                               y.to(device, non_blocking=True), 0.0, autocast)
        else:
            x_train = to_device_images(id_data["x_train"], device)
            y_train = torch.from_numpy(id_data["y_train"]).to(device)
            generator = torch.Generator(device=device).manual_seed(seed)

            def epoch():
                run_epoch(model, optimizer, schedule, x_train, y_train, batch, steps, "none", cfg, generator, autocast)
        epoch()  # warm-up epoch: worker start-up, cuDNN's choice of kernels, the allocator
        _sync(device)
        start = time.perf_counter()
        epoch()
        _sync(device)
        results[name] = steps * batch / (time.perf_counter() - start)
    return results


def _write_eval_sets(folder, id_data, seed):
    extra, logits_only = [], []
    n_test = len(id_data["x_test"])
    for name in OOD_SETS:
        path = os.path.join(folder, f"{name}.npz")
        save_npz_atomic(path, **make_dataset(name, seed=seed, size=n_test, id_arrays=id_data))
        extra.append((name, path))
    for name in CORRUPTIONS:  # MNIST-C-sized stand-ins: the speed depends on the count, not the content
        path = os.path.join(folder, f"mnistc_{name}.npz")
        save_npz_atomic(path, x_test=id_data["x_test"], y_test=id_data["y_test"])
        logits_only.append((f"mnistc_{name}", path))
    return extra, logits_only


def grid(id_data, aux, mixing, cfg, folder, device, seed):
    """(b): train and evaluate the six models; one dict of figures per model."""
    log = logging.getLogger("benchmarks.gpu_check")
    extra, logits_only = _write_eval_sets(folder, id_data, seed)
    rows = []
    for augment, oe in GRID:
        model_dir = os.path.join(folder, augment, oe)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        start = time.perf_counter()
        _, log_rows = train(id_data, augment, oe, 1, cfg, os.path.join(model_dir, "model.pt"),
                            os.path.join(model_dir, "train_log.csv"), os.path.join(model_dir, "checkpoint.pt"),
                            aux=aux if oe == "oe" else None, mixing=mixing if augment == "pixmix" else None, log=log)
        _sync(device)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        evaluate(os.path.join(model_dir, "model.pt"), id_data, cfg, extra + logits_only,
                 os.path.join(model_dir, "logits"), log, logits_only={name for name, _ in logits_only}, odin=True)
        _sync(device)
        eval_s = time.perf_counter() - start
        with np.load(os.path.join(model_dir, "logits", "id_test.npz")) as f:
            accuracy = float((f["logits"].argmax(1) == f["labels"]).mean())
        rows.append({"augment": augment, "oe": oe, "train_s": train_s, "eval_s": eval_s,
                     "epoch_images_per_s": max(r["images_per_s"] for r in log_rows),
                     "mean_images_per_s": sum(r["images_per_s"] for r in log_rows) / len(log_rows),
                     "peak_gpu_memory_mib": (torch.cuda.max_memory_allocated() / 2**20
                                             if device.type == "cuda" else None),
                     "test_accuracy": accuracy})
    return rows


def run_check(images=60_000, test_images=10_000, aux_images=50_000, mixing_images=2000, epochs=10,
              model="convnet", workers=1, device="auto", seed=0, out=None):
    cfg = validate_config({"train": {"model": model, "epochs": epochs, "device": device},
                           "outlier_exposure": {"source": "jigsaw"}})
    device = pick_device(cfg["train"]["device"])
    # The host side of a GPU run needs few threads; on a shared CPU, OpenMP's spinning
    # threads slow everything down (one thread per job, as the workflow runs them).
    torch.set_num_threads(min(4, torch.get_num_threads()) if device.type == "cuda" else 1)
    t0 = time.perf_counter()
    pictures, labels = jittered_digits(images + test_images, seed)
    id_data = {"x_train": pictures[:images], "y_train": labels[:images],
               "x_test": pictures[images:], "y_test": labels[images:]}
    train_idx, _ = validation_split(images, cfg["seed"], cfg["train"]["val_fraction"])
    aux = {"x_train": auxiliary_images(id_data["x_train"][train_idx], aux_images, derive_seed(seed, "aux"))}
    mixing = {"images": fractal_images(mixing_images, seed)}
    setup_s = time.perf_counter() - t0
    print(f"data: {images} training + {test_images} test pictures, {aux_images} OE outliers, "
          f"{mixing_images} fractals, made in {setup_s:.1f} s; device {machine()['gpu'] or machine()['cpu']}; "
          f"model {model} ({model_mflops(model):.1f} MFLOPs/image), batch {cfg['train']['batch_size']}", flush=True)

    speeds = usual_vs_ours(id_data, cfg, device, workers, seed)
    ratio = speeds["ours"] / speeds["usual"]
    print(f"(a) one epoch, plain training: examples/mnist-style loop ({workers} worker(s)) "
          f"{speeds['usual']:,.0f} img/s, ours {speeds['ours']:,.0f} img/s, ratio {ratio:.1f}x (goal >= 20x on a GPU)",
          flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        rows = grid(id_data, aux, mixing, cfg, folder, device, seed)
    print(f"(b) the grid, {epochs} epoch(s) per model, {len(train_idx)} training pictures per epoch:")
    print(f"    {'model':22s} {'train s':>8s} {'img/s':>9s} {'peak MiB':>9s} {'eval s':>7s} {'test acc':>8s}")
    for row in rows:
        memory = "-" if row["peak_gpu_memory_mib"] is None else f"{row['peak_gpu_memory_mib']:.0f}"
        print(f"    {row['augment'] + '/' + row['oe']:22s} {row['train_s']:8.1f} {row['mean_images_per_s']:9,.0f} "
              f"{memory:>9s} {row['eval_s']:7.1f} {row['test_accuracy']:8.4f}")
    total_train = sum(r["train_s"] for r in rows)
    total = total_train + sum(r["eval_s"] for r in rows)
    print(f"    total: training {total_train:.1f} s, training + evaluation {total:.1f} s (goal <= 60 s on an H100/H200)")

    chunk = CHUNK_IMAGES.get(device.type, CHUNK_IMAGES["cpu"])
    pixmix_s = epoch_seconds(id_data["x_train"], mixing["images"], chunk, seed, device, epoch_images=images)
    print(f"(c) PixMix alone: one {images:,}-image epoch of pixmix_batch in chunks of {chunk:,}: "
          f"{pixmix_s:.2f} s ({images / pixmix_s:,.0f} img/s)", flush=True)
    result = {"machine": machine(), "settings": {"images": images, "test_images": test_images, "aux_images": aux_images,
                                                 "mixing_images": mixing_images, "epochs": epochs, "model": model,
                                                 "workers": workers, "batch": cfg["train"]["batch_size"]},
              "usual_vs_ours": {**speeds, "ratio": ratio}, "grid": rows,
              "total_train_s": total_train, "total_s": total, "setup_s": setup_s,
              "pixmix_epoch": {"images": images, "chunk": chunk, "seconds": pixmix_s}}
    if out:
        os.makedirs(out, exist_ok=True)
        replace_atomic(os.path.join(out, "gpu_check.json"),
                       lambda tmp: open(tmp, "w").write(json.dumps(result, indent=1) + "\n"))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=60_000, help="training pictures (MNIST: 60,000)")
    parser.add_argument("--test-images", type=int, default=10_000)
    parser.add_argument("--aux-images", type=int, default=50_000, help="OE outlier pictures")
    parser.add_argument("--mixing-images", type=int, default=2000, help="PixMix fractals")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the usual loop (examples/mnist: 1)")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = parser.parse_args(argv)
    return run_check(args.images, args.test_images, args.aux_images, args.mixing_images, args.epochs, args.model,
                     args.workers, args.device, out=args.out)


if __name__ == "__main__":
    main()
