"""Evaluation benchmark: lib.evaluate.forward over every evaluation set of one model, against the usual loop.

    from benchmarks.bench_eval import bench_eval
    line = bench_eval(n_test=2000, model="small_convnet")
    line["ours"], line["ratio"]

    python -m benchmarks.bench_eval [--tiny] [--model small_convnet]

`ours` is images/s of lib.evaluate.forward.evaluate as the evaluate job runs it: logits and
penultimate features of the in-distribution test and validation splits and of six
generated OOD sets, logits of 15 MNIST-C-sized sets, the Mahalanobis statistics of the
training split, every output written as npz. Each evaluation picture counts once (the
training-split pass for the statistics is extra work, not counted). `reference` is the
test loop of PyTorch's examples/mnist on the same pictures and model: a Dataset with
per-sample ToTensor and Normalize, a DataLoader (batch 1000, 2 workers), logits only.
The detail names the images/s with ODIN logits too (two more passes and a backward pass
on the non-MNIST-C sets). The MNIST-C-sized sets hold the in-distribution test pictures:
the speed depends on the number of pictures, not on what they show.
"""
import argparse
import logging
import os
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.bench_training import PixMixDigits
from benchmarks.data import jittered_digits
from lib.common import save_npz_atomic
from lib.config import validate_config
from lib.data.corruptions import CORRUPTIONS
from lib.data.registry import make_dataset
from lib.data.splits import validation_split
from lib.evaluate.forward import evaluate
from lib.train.models import build_model, model_mflops, save_torch_atomic

OOD_SETS = ("gaussian", "bernoulli", "blobs", "uniform", "negated", "photos")


def _write_sets(folder, n_train, n_test, seed):
    images, labels = jittered_digits(n_train + n_test, seed)
    id_data = {"x_train": images[:n_train], "y_train": labels[:n_train],
               "x_test": images[n_train:], "y_test": labels[n_train:]}
    extra, logits_only = [], []
    for name in OOD_SETS:
        arrays = make_dataset(name, seed=seed, size=n_test, id_arrays=id_data)
        path = os.path.join(folder, f"{name}.npz")
        save_npz_atomic(path, **arrays)
        extra.append((name, path))
    for name in CORRUPTIONS:
        path = os.path.join(folder, f"mnistc_{name}.npz")
        save_npz_atomic(path, x_test=id_data["x_test"], y_test=id_data["y_test"])
        logits_only.append((f"mnistc_{name}", path))
    return id_data, extra, logits_only


def _evaluation_pictures(id_data, cfg, sets):
    _, val_idx = validation_split(len(id_data["x_train"]), cfg["seed"], cfg["train"]["val_fraction"])
    pictures = [id_data["x_test"], id_data["x_train"][val_idx]]
    for _, path in sets:
        with np.load(path) as f:
            pictures.append(f["x_test"])
    return pictures


def bench_eval(n_train=10_000, n_test=2000, model="small_convnet", repeats=2, workers=2, threads=1, seed=0):
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-eval-") as folder:
            return _bench(folder, n_train, n_test, model, repeats, workers, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _bench(folder, n_train, n_test, model_name, repeats, workers, seed):
    cfg = validate_config({"train": {"model": model_name, "device": "cpu"}})
    id_data, extra, logits_only = _write_sets(folder, n_train, n_test, seed)
    model = build_model(model_name, 10).eval()
    model_path = os.path.join(folder, "model.pt")
    save_torch_atomic(model_path, {"state_dict": model.state_dict(), "model_name": model_name, "num_classes": 10})
    pictures = _evaluation_pictures(id_data, cfg, extra + logits_only)
    n_pictures = sum(len(p) for p in pictures)
    log = logging.getLogger("benchmarks.eval")
    log.setLevel(logging.WARNING)

    def ours(odin=False):
        evaluate(model_path, id_data, cfg, extra + logits_only, os.path.join(folder, "logits"), log,
                 logits_only={name for name, _ in logits_only}, odin=odin)

    loaders = [DataLoader(PixMixDigits(p, None, None, seed, pixmix=False), batch_size=1000,
                          num_workers=workers, persistent_workers=workers > 0) for p in pictures]

    def usual():
        with torch.no_grad():
            for loader in loaders:
                for x, _ in loader:
                    model(x)

    best = {"ours": float("inf"), "odin": float("inf"), "usual": float("inf")}
    runs = (("ours", ours), ("odin", lambda: ours(odin=True)), ("usual", usual))
    for name, run in runs:
        run()  # warm-up: worker start-up, allocator
    for _ in range(repeats):
        for name, run in runs:
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    del loaders
    per_s = {name: n_pictures / s for name, s in best.items()}
    return {"name": f"evaluation (all {2 + len(extra) + len(logits_only)} sets, one model / examples/mnist test loop)",
            "ours": per_s["ours"], "reference": per_s["usual"], "unit": "img/s",
            "ratio": per_s["ours"] / per_s["usual"], "goal": "report", "met": None,
            "detail": (f"{model_name} ({model_mflops(model_name):.1f} MFLOPs/image), {n_pictures} pictures, "
                       f"batch {cfg['train']['eval_batch_size']}; with ODIN logits {per_s['odin']:,.0f} img/s; "
                       f"best of {repeats}, {torch.get_num_threads()} torch thread(s)")}


TINY = dict(n_train=300, n_test=60, repeats=1, workers=1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="seconds-long run that checks the code, not the speed")
    parser.add_argument("--model", default="small_convnet")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    line = bench_eval(model=args.model, threads=args.threads, **(TINY if args.tiny else {}))
    print(f"{line['name']}: {line['ours']:,.0f} vs {line['reference']:,.0f} img/s, ratio {line['ratio']:.2f}; "
          f"{line['detail']}")
    return line


if __name__ == "__main__":
    main()
