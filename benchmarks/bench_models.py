"""Accuracy per FLOP of the selectable models (lib/train/models.py) on a real 28x28 set, with the study's recipe.

    python -m benchmarks.bench_models --data-dir /usr/share/datasets/fashion-mnist --epochs 3
    python -m benchmarks.bench_models --data-dir data/MNIST/raw --epochs 10   # once MNIST is staged

Reads an IDX folder (train-/t10k- images and labels, .gz or not: MNIST, Fashion-MNIST,
KMNIST), trains every model of lib.train.models.MODELS through lib.train.loop.train (the config's
defaults: SGD with Nesterov momentum, cosine schedule, batch 128, no augmentation) and
prints per model: MFLOPs per image (forward), parameters, test accuracy, training
images/s on this machine. Not part of `make bench` (minutes per model on a CPU); its
figures are in docs/performance.md. The default model is chosen on how its Base model
behaves (benchmarks/baselines.py, docs/baselines.md).
"""
import argparse
import logging
import os
import tempfile
import time

import numpy as np
import torch

from lib.config import validate_config
from lib.data.readers import read_idx
from lib.train.models import MODELS, build_model, model_mflops
from lib.train.loop import train


def _idx(folder, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(folder, name)):
            return read_idx(os.path.join(folder, name), 3 if "images" in stem else 1)
    raise FileNotFoundError(f"{folder}: no {stem}[.gz]; pass a folder holding MNIST-format IDX files "
                            "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-...)")


def load_idx_folder(folder):
    return {"x_train": _idx(folder, "train-images-idx3-ubyte"),
            "y_train": _idx(folder, "train-labels-idx1-ubyte").astype(np.int64),
            "x_test": _idx(folder, "t10k-images-idx3-ubyte"),
            "y_test": _idx(folder, "t10k-labels-idx1-ubyte").astype(np.int64)}


def bench_models(data, epochs=3, models=tuple(MODELS), seed=1, threads=1):
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train_each(data, epochs, models, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _train_each(data, epochs, models, seed):
    rows = []
    log = logging.getLogger("benchmarks.models")
    for name in models:
        cfg = validate_config({"train": {"model": name, "epochs": epochs, "device": "cpu"}})
        with tempfile.TemporaryDirectory(prefix="bench-models-") as folder:
            start = time.perf_counter()
            model, log_rows = train(data, "none", "baseline", seed, cfg, os.path.join(folder, "model.pt"),
                                    os.path.join(folder, "log.csv"), None, log=log)
            seconds = time.perf_counter() - start
        model.eval()
        with torch.inference_mode():
            x = torch.from_numpy(data["x_test"]).float().div_(255)[:, None]
            predicted = torch.cat([model(x[i:i + 2048]).argmax(1) for i in range(0, len(x), 2048)]).numpy()
        rows.append({"model": name, "mflops": model_mflops(name),
                     "parameters": sum(p.numel() for p in build_model(name).parameters()),
                     "test_accuracy": float((predicted == data["y_test"]).mean()),
                     "train_images_per_s": max(r["images_per_s"] for r in log_rows), "train_s": seconds})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_models", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    rows = bench_models(load_idx_folder(args.data_dir), args.epochs, args.models.split(","))
    print(f"{'model':14s} {'MFLOPs':>7s} {'params':>9s} {'test acc':>9s} {'train img/s':>12s}  ({args.epochs} epochs, "
          f"{args.data_dir})")
    for r in rows:
        print(f"{r['model']:14s} {r['mflops']:7.1f} {r['parameters']:9,d} {r['test_accuracy']:9.4f} "
              f"{r['train_images_per_s']:12,.0f}")
    return rows


if __name__ == "__main__":
    main()
