"""One forward pass of one model over every evaluation set; everything later reads these.

    python -m lib.evaluate.forward --model results/models/none/baseline/seed1/model.pt \
        --id-data results/data/digits.npz --config-json "$CFG" --out-dir results/logits/none/baseline/seed1 \
        --set gaussian=results/data/gaussian.npz --set negated=results/data/negated.npz [--odin] \
        --logits-set mnistc_fog=results/data/corruptions/fog.npz

Writes <out-dir>/<name>.npz per set with `logits` (float32 [N, C]), `labels` (int64, -1
for unlabelled sets) and `features` (float32 penultimate features [N, D]); with --odin also
`odin_logits` (float32 [N, C], the logits of the ODIN-perturbed images divided by the ODIN
temperature, lib.evaluate.scores.odin_logits). The in-distribution set gives two files: `id_test`
(its test split) and `id_val` (the held-out 10% of its training split, used to fit the
temperature). <out-dir>/mahalanobis_stats.npz holds `class_means` [C, D] and `precision`
[D, D] of the penultimate features of the training split (the images the model was
trained on, without the validation split), lib.evaluate.scores.fit_mahalanobis. --logits-set files hold
logits and labels only: the 15 MNIST-C sets need no features or ODIN logits, which would
otherwise dominate the disk and the time.
"""
import argparse
import json
import os

import numpy as np
import torch

from lib import layout
from lib.common import (array_problems, keep_freed_memory, load_npz, pick_device, save_npz_atomic, setup_logging,
                        use_threads)
from lib.evaluate.scores import fit_mahalanobis, odin_logits
from lib.train.models import load_model_file, to_device_images
from lib.data.splits import validation_split


def forward_in_batches(model, x_uint8, device, batch_size=2048):
    """Logits and features for uint8 images [N, 28, 28], under inference_mode."""
    x_all = to_device_images(x_uint8, device)
    logits, feats = [], []
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    with torch.inference_mode(), autocast:
        for start in range(0, len(x_all), batch_size):
            f = model.features(x_all[start:start + batch_size])
            logits.append(model.head(f).float())
            feats.append(f.float())
    return torch.cat(logits).cpu().numpy(), torch.cat(feats).cpu().numpy()


def odin_logits_in_batches(model, x_uint8, device, batch_size=2048):
    """ODIN logits (lib.evaluate.scores.odin_logits) for uint8 images [N, 28, 28]; float32 numpy [N, C].

    Needs input gradients, so it runs outside inference_mode, and in float32: the
    logits divided by T = 1000 differ in the fourth decimal, below bfloat16's precision.
    """
    out = []
    for start in range(0, len(x_uint8), batch_size):
        xb = to_device_images(x_uint8[start:start + batch_size], device)
        out.append(odin_logits(model, xb).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.head.out_features), np.float32)


def mahalanobis_stats(model, id_data, cfg, device):
    """fit_mahalanobis on the features of the training split (validation split left out)."""
    train_idx, _ = validation_split(len(id_data["x_train"]), cfg["seed"], cfg["train"]["val_fraction"])
    _, feats = forward_in_batches(model, id_data["x_train"][train_idx], device, cfg["train"]["eval_batch_size"])
    return fit_mahalanobis(feats, id_data["y_train"][train_idx])


def evaluation_sets(id_data, cfg, extra):
    """(name, images, labels) for the ID test split, the ID validation split and `extra`."""
    _, val_idx = validation_split(len(id_data["x_train"]), cfg["seed"], cfg["train"]["val_fraction"])
    yield "id_test", id_data["x_test"], id_data["y_test"]
    yield "id_val", id_data["x_train"][val_idx], id_data["y_train"][val_idx]
    for name, path in extra:
        arrays = load_npz(path, required=("x_test", "y_test"))
        yield name, arrays["x_test"], arrays["y_test"]


def evaluate(model_path, id_data, cfg, extra, out_dir, log, logits_only=(), odin=False):
    """Write <out_dir>/<set>.npz for every evaluation set and <out_dir>/mahalanobis_stats.npz.

    `odin`: also save `odin_logits` (one forward and backward pass more per set).
    `logits_only`: names of sets that get logits and labels only.
    """
    device = pick_device(cfg["train"]["device"])
    model, meta = load_model_file(model_path, device)
    os.makedirs(out_dir, exist_ok=True)
    batch_size = cfg["train"]["eval_batch_size"]
    stats = mahalanobis_stats(model, id_data, cfg, device)
    save_npz_atomic(os.path.join(out_dir, layout.MAHALANOBIS_STATS), **stats)
    log.info("mahalanobis: class means %s, precision %s from the training split",
             stats["class_means"].shape, stats["precision"].shape)
    for name, x, y in evaluation_sets(id_data, cfg, extra):
        logits, feats = forward_in_batches(model, x, device, batch_size)
        arrays = {"logits": logits.astype(np.float32), "labels": np.asarray(y, dtype=np.int64)}
        if name not in logits_only:
            arrays["features"] = feats.astype(np.float32)
            if odin:
                arrays["odin_logits"] = odin_logits_in_batches(model, x, device, batch_size)
        if problems := array_problems(arrays):
            # Written, they would pass on a NaN to every score and table; the model is what is broken.
            raise ValueError(f"{model_path} on {name}: " + "; ".join(problems) + f". Nothing was written for "
                             f"{name}. Delete the model file and rerun the same snakemake command to train it again.")
        save_npz_atomic(layout.npz_in(out_dir, name), **arrays)
        acc = float((logits.argmax(1) == y).mean()) if (y >= 0).all() else float("nan")
        log.info("%s: %d images, accuracy %.4f%s", name, len(x), acc, ", with ODIN logits" if odin else "")


def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate one model on every evaluation set.")
    p.add_argument("--model", required=True)
    p.add_argument("--id-data", required=True)
    p.add_argument("--config-json", required=True)
    p.add_argument("--set", action="append", default=[], metavar="NAME=NPZ")
    p.add_argument("--logits-set", action="append", default=[], metavar="NAME=NPZ",
                   help="like --set, but the output holds logits and labels only")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (Snakemake's {threads})")
    p.add_argument("--odin", action="store_true", help="also save ODIN logits (needs input gradients)")
    p.add_argument("--log")
    a = p.parse_args(argv)
    log = setup_logging(a.log)
    keep_freed_memory()
    use_threads(a.threads, log)
    extra = [tuple(s.split("=", 1)) for s in a.set]
    logits_only = [tuple(s.split("=", 1)) for s in a.logits_set]
    id_data = load_npz(a.id_data, required=("x_train", "y_train", "x_test", "y_test"))
    evaluate(a.model, id_data, json.loads(a.config_json), extra + logits_only, a.out_dir, log,
             logits_only={name for name, _ in logits_only}, odin=a.odin)


if __name__ == "__main__":
    main()
