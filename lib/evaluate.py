"""One forward pass of one model over every evaluation set; everything later reads these.

    python -m lib.evaluate --model results/models/none/baseline/seed1/model.pt \
        --id-data results/data/digits.npz --config-json "$CFG" --out-dir results/logits/none/baseline/seed1 \
        --set gaussian=results/data/gaussian.npz --set negated=results/data/negated.npz \
        --logits-set mnistc_fog=results/data/corruptions/fog.npz

Writes <out-dir>/<name>.npz per set with `logits` (float32 [N, C]), `labels` (int64, -1
for unlabelled sets) and `features` (float32 penultimate features). The in-distribution
set gives two files: `id_test` (its test split) and `id_val` (the held-out 10% of its
training split, used to fit the temperature). --logits-set files hold logits and labels
only: the 15 MNIST-C sets need no features, which would otherwise dominate the disk.
"""
import argparse
import json
import os

import numpy as np
import torch

from lib.common import pick_device, save_npz_atomic, setup_logging
from lib.datasets import load_npz
from lib.train import load_model_file, to_device_images, validation_split


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


def evaluation_sets(id_data, cfg, extra):
    """(name, images, labels) for the ID test split, the ID validation split and `extra`."""
    _, val_idx = validation_split(len(id_data["x_train"]), cfg["seed"], cfg["train"]["val_fraction"])
    yield "id_test", id_data["x_test"], id_data["y_test"]
    yield "id_val", id_data["x_train"][val_idx], id_data["y_train"][val_idx]
    for name, path in extra:
        arrays = load_npz(path)
        yield name, arrays["x_test"], arrays["y_test"]


def evaluate(model_path, id_data, cfg, extra, out_dir, log, logits_only=()):
    device = pick_device(cfg["train"]["device"])
    model, meta = load_model_file(model_path, device)
    os.makedirs(out_dir, exist_ok=True)
    for name, x, y in evaluation_sets(id_data, cfg, extra):
        logits, feats = forward_in_batches(model, x, device, cfg["train"]["eval_batch_size"])
        arrays = {"logits": logits.astype(np.float32), "labels": np.asarray(y, dtype=np.int64)}
        if name not in logits_only:
            arrays["features"] = feats.astype(np.float32)
        save_npz_atomic(os.path.join(out_dir, f"{name}.npz"), **arrays)
        acc = float((logits.argmax(1) == y).mean()) if (y >= 0).all() else float("nan")
        log.info("%s: %d images, accuracy %.4f", name, len(x), acc)


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
    p.add_argument("--log")
    a = p.parse_args(argv)
    log = setup_logging(a.log)
    torch.set_num_threads(a.threads)
    extra = [tuple(s.split("=", 1)) for s in a.set]
    logits_only = [tuple(s.split("=", 1)) for s in a.logits_set]
    evaluate(a.model, load_npz(a.id_data), json.loads(a.config_json), extra + logits_only, a.out_dir, log,
             logits_only={name for name, _ in logits_only})


if __name__ == "__main__":
    main()
