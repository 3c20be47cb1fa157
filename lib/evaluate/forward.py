"""One forward pass of one model over every evaluation set; everything later reads these.

    python -m lib.evaluate.forward --model results/models/none/baseline/seed1/model.pt \
        --id-data results/data/digits.npz --config-json "$CFG" --out-dir results/logits/none/baseline/seed1 \
        --set gaussian=results/data/gaussian.npz --set negated=results/data/negated.npz [--odin] \
        --logits-set mnistc_fog=results/data/corruptions/fog.npz [--validation-set blobs=results/data/blobs.npz]

Writes <out-dir>/<name>.npz per set with `logits` (float32 [N, C]), `labels` (int64, -1
for unlabelled sets), `features` (float32 penultimate features [N, D]) and `knn_distance`
(float64 [N], the knn score: lib.evaluate.scores.knn_score against the training split); with --odin also
`odin_logits` (float32 [N, C], the logits of the ODIN-perturbed images divided by the ODIN
temperature, lib.evaluate.scores.odin_logits). The in-distribution set gives two files: `id_test`
(its test split) and `id_val` (the held-out 10% of its training split, used to fit the
temperature). <out-dir>/mahalanobis_stats.npz holds `class_means` [C, D] and `precision`
[D, D] of the penultimate features of the training split (the images the model was
trained on, without the validation split), lib.evaluate.scores.fit_mahalanobis;
<out-dir>/posthoc_stats.npz what vim and react read (lib.evaluate.scores.fit_posthoc:
the head's weight and bias, ViM's origin, subspace and alpha, ReAct's threshold), and <out-dir>/score_hyperparameters.json the hyperparameters used and their
source (lib.evaluate.tuning: the papers' values, or tuned on the --validation-set sets
against id_val). --logits-set files hold
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
                        use_threads, write_json_atomic)
from lib.config import add_extension_argument, load_extensions
from lib.evaluate.scores import (ODIN_EPSILON, ODIN_TEMPERATURE, fit_mahalanobis, fit_posthoc, knn_score,
                                 normalise_rows, odin_logits)
from lib.evaluate.tuning import chosen, paper_record, tune_odin, tune_posthoc
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


def odin_logits_in_batches(model, x_uint8, device, batch_size=2048, temperature=ODIN_TEMPERATURE,
                           epsilon=ODIN_EPSILON):
    """ODIN logits (lib.evaluate.scores.odin_logits) for uint8 images [N, 28, 28]; float32 numpy [N, C].

    Needs input gradients, so it runs outside inference_mode, and in float32: the
    logits divided by T = 1000 differ in the fourth decimal, below bfloat16's precision.
    """
    out = []
    for start in range(0, len(x_uint8), batch_size):
        xb = to_device_images(x_uint8[start:start + batch_size], device)
        out.append(odin_logits(model, xb, temperature, epsilon).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.head.out_features), np.float32)


def training_features(model, id_data, cfg, device):
    """Penultimate features and labels of the training split (the validation split left out)."""
    train_idx, _ = validation_split(len(id_data["x_train"]), cfg["seed"], cfg["train"]["val_fraction"])
    _, feats = forward_in_batches(model, id_data["x_train"][train_idx], device, cfg["train"]["eval_batch_size"])
    return feats, id_data["y_train"][train_idx]


def head_parameters(model):
    """The last layer's weight [C, D] and bias [C] as float64 numpy (ViM and ReAct recompute logits)."""
    return (model.head.weight.detach().double().cpu().numpy(), model.head.bias.detach().double().cpu().numpy())


def score_hyperparameters(model, id_data, cfg, device, train_feats, validation, odin, log):
    """The hyperparameter record (lib.evaluate.tuning): the papers' values, or with
    `validation` [(name, npz path)] the values picked on id_val against those sets."""
    record = paper_record(train_feats.shape[1], odin)
    if not validation:
        return record
    batch_size = cfg["train"]["eval_batch_size"]
    _, val_idx = validation_split(len(id_data["x_train"]), cfg["seed"], cfg["train"]["val_fraction"])
    images = {"id_val": id_data["x_train"][val_idx]}
    images.update((name, load_npz(path, required=("x_test",))["x_test"]) for name, path in validation)
    feats = {name: forward_in_batches(model, x, device, batch_size)[1] for name, x in images.items()}
    sets = [name for name, _ in validation]
    weight, bias = head_parameters(model)
    tune_posthoc(record, train_feats, weight, bias, feats["id_val"], {n: feats[n] for n in sets}, sets)
    if odin:
        def odin_logits_of(temperature, epsilon):
            z = {name: odin_logits_in_batches(model, x, device, batch_size, temperature, epsilon)
                 for name, x in images.items()}
            return z["id_val"], {n: z[n] for n in sets}
        tune_odin(record, odin_logits_of, sets)
    for name, entry in record["scores"].items():
        log.info("%s: %s (%s, validation AUROC %s)", name, entry["values"], entry["source"], entry["validation_auroc"])
    return record


def evaluation_sets(id_data, cfg, extra):
    """(name, images, labels) for the ID test split, the ID validation split and `extra`."""
    _, val_idx = validation_split(len(id_data["x_train"]), cfg["seed"], cfg["train"]["val_fraction"])
    yield "id_test", id_data["x_test"], id_data["y_test"]
    yield "id_val", id_data["x_train"][val_idx], id_data["y_train"][val_idx]
    for name, path in extra:
        arrays = load_npz(path, required=("x_test", "y_test"))
        yield name, arrays["x_test"], arrays["y_test"]


def evaluate(model_path, id_data, cfg, extra, out_dir, log, logits_only=(), odin=False, validation=()):
    """Write <out_dir>/<set>.npz for every evaluation set, and the training-set statistics
    (mahalanobis_stats.npz, posthoc_stats.npz) and score hyperparameters of the model.

    `odin`: also save `odin_logits` (one forward and backward pass more per set).
    `logits_only`: names of sets that get logits and labels only.
    `validation`: [(name, npz path)] of validation OOD sets to tune the hyperparameters on.
    """
    device = pick_device(cfg["train"]["device"])
    model, meta = load_model_file(model_path, device)
    os.makedirs(out_dir, exist_ok=True)
    batch_size = cfg["train"]["eval_batch_size"]
    train_feats, train_labels = training_features(model, id_data, cfg, device)
    stats = fit_mahalanobis(train_feats, train_labels)
    save_npz_atomic(os.path.join(out_dir, layout.MAHALANOBIS_STATS), **stats)
    log.info("mahalanobis: class means %s, precision %s from the training split",
             stats["class_means"].shape, stats["precision"].shape)
    record = score_hyperparameters(model, id_data, cfg, device, train_feats, validation, odin, log)
    odin_values = chosen(record, "odin") if odin else {}
    knn_bank, knn_k = normalise_rows(train_feats), chosen(record, "knn")["k"]
    for name, x, y in evaluation_sets(id_data, cfg, extra):
        logits, feats = forward_in_batches(model, x, device, batch_size)
        arrays = {"logits": logits.astype(np.float32), "labels": np.asarray(y, dtype=np.int64)}
        if name not in logits_only:
            arrays["features"] = feats.astype(np.float32)
            # Here, once per set: each OOD set's score job would search the training split
            # for the ID test set again (and the job may have a GPU node's cores).
            arrays["knn_distance"] = knn_score(feats, knn_bank, knn_k)
            if odin:
                arrays["odin_logits"] = odin_logits_in_batches(model, x, device, batch_size, **odin_values)
        if problems := array_problems(arrays):
            # Written, they would pass on a NaN to every score and table; the model is what is broken.
            raise ValueError(f"{model_path} on {name}: " + "; ".join(problems) + f". Nothing was written for "
                             f"{name}. Delete the model file and rerun the same snakemake command to train it again.")
        save_npz_atomic(layout.npz_in(out_dir, name), **arrays)
        acc = float((logits.argmax(1) == y).mean()) if (y >= 0).all() else float("nan")
        log.info("%s: %d images, accuracy %.4f%s", name, len(x), acc, ", with ODIN logits" if odin else "")
    # After the sets: a model with non-finite outputs has been refused above, with its cause.
    posthoc = fit_posthoc(train_feats, *head_parameters(model), percentile=chosen(record, "react")["percentile"],
                          dimension=chosen(record, "vim")["dimension"])
    save_npz_atomic(os.path.join(out_dir, layout.POSTHOC_STATS), **posthoc)
    write_json_atomic(os.path.join(out_dir, layout.HYPERPARAMETERS), record)
    log.info("knn: k = %d of %d training features; vim residual basis %s; react threshold %.4g",
             knn_k, len(knn_bank), posthoc["vim_residual_basis"].shape, posthoc["react_threshold"])


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
    p.add_argument("--validation-set", action="append", default=[], metavar="NAME=NPZ",
                   help="a validation OOD set: the score hyperparameters are tuned on it (never on a --set)")
    p.add_argument("--log")
    add_extension_argument(p)
    a = p.parse_args(argv)
    log = setup_logging(a.log)
    load_extensions(a.extension)  # before the model is built by name
    keep_freed_memory()
    use_threads(a.threads, log)
    extra = [tuple(s.split("=", 1)) for s in a.set]
    logits_only = [tuple(s.split("=", 1)) for s in a.logits_set]
    id_data = load_npz(a.id_data, required=("x_train", "y_train", "x_test", "y_test"))
    evaluate(a.model, id_data, json.loads(a.config_json), extra + logits_only, a.out_dir, log,
             logits_only={name for name, _ in logits_only}, odin=a.odin,
             validation=[tuple(s.split("=", 1)) for s in a.validation_set])


if __name__ == "__main__":
    main()
