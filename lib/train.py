"""Train one model of the grid: {augment} x {oe} x {seed}.

    python -m lib.train --data results/data/digits.npz --augment saltpepper --oe oe \
        --aux results/data/jigsaw.npz --seed 1 --config-json "$(cat cfg.json)" \
        --out-model results/models/saltpepper/oe/seed1/model.pt \
        --out-log results/models/saltpepper/oe/seed1/train_log.csv \
        --checkpoint results/checkpoints/saltpepper/oe/seed1.pt

The whole training split sits on the device as one float tensor; batches are drawn by
index and augmented as a batch on the device. With Outlier Exposure the in-distribution
batch and an auxiliary batch twice its size go through one forward pass; the loss is
cross-entropy on the first part plus lambda * mean(logsumexp(z) - mean(z)) on the second
(the cross-entropy from the softmax to the uniform distribution, as in the reference).
`oe_tune` starts from the finished `baseline` model (--init) and fine-tunes with OE.

A checkpoint (model, optimiser, schedule, every RNG state, epoch, log rows) is written
atomically at each epoch end; a restarted job resumes from it and ends with the same
weights as an uninterrupted run (on the CPU).
"""
import argparse
import csv
import hashlib
import io
import json
import math
import os
import pickle
import time

import numpy as np
import torch
import torch.nn.functional as F

from lib.augment import augment_batch
from lib.common import derive_seed, device_name, pick_device, replace_atomic, setup_logging, sha256_file
from lib.models import build_model


class NonFiniteLoss(RuntimeError):
    pass


def validation_split(n, seed, fraction):
    """Indices (train, val) of a fixed held-out split of the training set.

    Made from the study seed alone, so every model of the grid holds out the same images
    and the temperature fitted on them is comparable across models.
    """
    rng = np.random.default_rng(derive_seed(seed, "validation-split"))
    order = rng.permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def to_device_images(x_uint8, device):
    return torch.from_numpy(np.ascontiguousarray(x_uint8)).to(device).unsqueeze(1).float().div_(255.0)


def oe_loss(logits_id, labels, logits_ood, lam):
    """Cross-entropy on ID + lam * mean over OOD of (logsumexp(z) - mean(z))."""
    loss = F.cross_entropy(logits_id, labels)
    if logits_ood is not None and len(logits_ood):
        loss = loss + lam * (torch.logsumexp(logits_ood, dim=1) - logits_ood.mean(dim=1)).mean()
    return loss


def make_optimizer(params, tcfg, lr):
    if tcfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=tcfg["momentum"], nesterov=tcfg["nesterov"],
                               weight_decay=tcfg["weight_decay"])
    return torch.optim.AdamW(params, lr=lr, weight_decay=tcfg["weight_decay"])


def make_schedule(optimizer, schedule, total_steps):
    if schedule == "cosine":
        # Per step, down to zero at the last step: the reference code's cosine annealing.
        lam = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    else:
        lam = lambda step: 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lam)


def _rng_state(generator):
    state = {"generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(generator, state):
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def save_torch_atomic(path, obj):
    replace_atomic(path, lambda tmp: torch.save(obj, tmp))


class UnsafeFileError(pickle.UnpicklingError):
    pass


def load_weights_only(path, device="cpu"):
    """torch.load(path, weights_only=True), with a message that does not invite turning that off."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UnsafeFileError(
            f"{path}: refusing to load: it holds pickled objects other than tensors and plain values "
            f"({first}). This project's model and checkpoint files never do; the file was written "
            f"by other code or tampered with. Delete it and rerun the training job.") from None


def load_model_file(path, device="cpu"):
    """Load a model.pt written by this module; refuses pickled code (weights_only=True)."""
    blob = load_weights_only(path, device)
    model = build_model(blob["model_name"], int(blob["num_classes"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), blob


def run_fingerprint(cfg, augment, oe, seed, data, aux=None, mixing=None, init=None):
    """sha256 of everything that shapes a training run; a checkpoint resumes only a run with the same one."""
    digest = hashlib.sha256(json.dumps([cfg, augment, oe, int(seed)], sort_keys=True).encode())
    for arrays in (data, aux, mixing):
        for key in sorted(arrays or {}):
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    if init:
        digest.update(sha256_file(init).encode())
    return digest.hexdigest()


def train(data, augment, oe, seed, cfg, out_model, out_log, checkpoint, aux=None, mixing=None,
          init=None, log=None):
    """Train and write out_model / out_log. `data`, `aux`, `mixing`: dicts of numpy arrays."""
    import logging
    log = log or logging.getLogger("mnist_safety")
    tcfg, ocfg = cfg["train"], cfg["outlier_exposure"]
    device = pick_device(tcfg["device"])
    run_seed = derive_seed(cfg["seed"], "train", augment, oe, seed)
    torch.manual_seed(run_seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(run_seed)

    train_idx, _ = validation_split(len(data["x_train"]), cfg["seed"], tcfg["val_fraction"])
    x_train = to_device_images(data["x_train"][train_idx], device)
    y_train = torch.from_numpy(data["y_train"][train_idx]).long().to(device)
    num_classes = int(data["y_train"].max()) + 1
    use_oe = oe in ("oe", "oe_tune")
    x_aux = to_device_images(aux["x_train"], device) if use_oe else None
    x_mix = to_device_images(mixing["images"], device) if mixing is not None else None

    model = build_model(tcfg["model"], num_classes).to(device)
    if oe == "oe_tune":
        if init is None:
            raise ValueError("oe_tune needs the baseline model of the same augment and seed (--init)")
        base, _ = load_model_file(init, device)
        model.load_state_dict(base.state_dict())
        epochs, lr = ocfg["tune_epochs"], ocfg["tune_lr"]
    else:
        epochs, lr = tcfg["epochs"], tcfg["lr"]
    batch = tcfg["batch_size"]
    steps_per_epoch = max(1, len(x_train) // batch)  # drop the ragged last batch: BN needs >1 sample
    optimizer = make_optimizer(model.parameters(), tcfg, lr)
    schedule = make_schedule(optimizer, tcfg["schedule"], epochs * steps_per_epoch)
    lam, aux_batch = ocfg["lambda"], ocfg["batch_factor"] * batch
    nan_step = int(os.environ.get("MNIST_SAFETY_INJECT_NAN_STEP", "-1"))  # test-only fault injection

    rows, start_epoch = [], 0
    fingerprint = run_fingerprint(cfg, augment, oe, seed, data, aux if use_oe else None, mixing, init)
    state = load_weights_only(checkpoint, device) if checkpoint and os.path.exists(checkpoint) else None
    if state is not None and state.get("fingerprint") != fingerprint:
        # Resuming would splice two different trainings into one model.
        log.warning("ignoring checkpoint %s: it was written for other settings or data; "
                    "training from epoch 1", checkpoint)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        _set_rng_state(generator, state["rng"])
        rows, start_epoch = json.loads(state["rows"]), int(state["epoch"])
        if start_epoch < epochs:
            log.info("resuming from %s at epoch %d of %d", checkpoint, start_epoch + 1, epochs)
        else:
            log.info("resuming from %s: all %d epochs done, writing the model", checkpoint, epochs)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _NoAutocast()
    log.info("training %s/%s/seed%s: model %s, %d images, %d epochs, batch %d, device %s",
             augment, oe, seed, tcfg["model"], len(x_train), epochs, batch, device_name(device))
    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(x_train), generator=generator, device=device)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for step in range(steps_per_epoch):
            idx = order[step * batch:(step + 1) * batch]
            xb = augment_batch(augment, x_train[idx], generator, cfg, mixing=x_mix)
            yb = y_train[idx]
            if use_oe:
                pick = torch.randint(len(x_aux), (aux_batch,), generator=generator, device=device)
                xb = torch.cat([xb, x_aux[pick]])
            with autocast:
                logits = model(xb).float()
            loss = oe_loss(logits[:len(idx)], yb, logits[len(idx):] if use_oe else None, lam)
            if epoch * steps_per_epoch + step == nan_step:
                loss = loss * float("nan")
            if not torch.isfinite(loss):
                raise NonFiniteLoss(
                    f"loss is {loss.item()} at epoch {epoch + 1}, batch {step + 1} "
                    f"({augment}/{oe}/seed{seed}); lower train.lr (now {lr}) or check the input data. "
                    "No model was written; the last checkpoint is kept.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.detach()
            correct += (logits[:len(idx)].argmax(1) == yb).sum()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        n_seen = steps_per_epoch * batch
        row = {"epoch": epoch + 1, "loss": total_loss.item() / steps_per_epoch,
               "train_accuracy": correct.item() / n_seen, "images_per_s": n_seen / seconds,
               "seconds": seconds, "lr": optimizer.param_groups[0]["lr"]}
        rows.append(row)
        log.info("epoch %d/%d loss %.4f accuracy %.4f %.0f images/s", row["epoch"], epochs, row["loss"],
                 row["train_accuracy"], row["images_per_s"])
        if checkpoint:
            save_torch_atomic(checkpoint, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "rng": _rng_state(generator),
                "epoch": epoch + 1, "rows": json.dumps(rows), "fingerprint": fingerprint})

    _write_log_csv(out_log, rows, device_name(device))
    save_torch_atomic(out_model, {
        "state_dict": model.state_dict(), "model_name": tcfg["model"], "num_classes": num_classes,
        "augment": augment, "oe": oe, "seed": int(seed), "device": device_name(device)})
    if checkpoint and os.path.exists(checkpoint):
        os.remove(checkpoint)
    return model, rows


class _NoAutocast:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _write_log_csv(path, rows, device):
    fields = ["epoch", "loss", "train_accuracy", "images_per_s", "seconds", "lr", "device"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "device": device})

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(buf.getvalue())
    replace_atomic(path, write)


def main(argv=None):
    from lib.datasets import load_npz
    p = argparse.ArgumentParser(description="Train one model of the grid.")
    p.add_argument("--data", required=True)
    p.add_argument("--augment", required=True)
    p.add_argument("--oe", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--config-json", required=True, help="resolved config (JSON text)")
    p.add_argument("--aux")
    p.add_argument("--mixing")
    p.add_argument("--init")
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-log", required=True)
    p.add_argument("--checkpoint")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (Snakemake's {threads})")
    p.add_argument("--log")
    a = p.parse_args(argv)
    log = setup_logging(a.log)
    cfg = json.loads(a.config_json)
    # One thread per job: on a few cores, parallel jobs beat one job's threads fighting them.
    torch.set_num_threads(a.threads)
    train(load_npz(a.data), a.augment, a.oe, a.seed, cfg, a.out_model, a.out_log, a.checkpoint,
          aux=load_npz(a.aux) if a.aux else None, mixing=load_npz(a.mixing) if a.mixing else None,
          init=a.init, log=log)


if __name__ == "__main__":
    main()
