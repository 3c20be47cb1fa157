"""Train one model of the grid: {augment} x {oe} x {seed}.

    python -m lib.train.loop --data results/data/digits.npz --augment saltpepper --oe oe \
        --aux results/data/jigsaw.npz --seed 1 --config-json "$(cat cfg.json)" \
        --out-model results/models/saltpepper/oe/seed1/model.pt \
        --out-log results/models/saltpepper/oe/seed1/train_log.csv \
        --checkpoint results/checkpoints/saltpepper/oe/seed1.pt

The whole training split sits on the device as one float tensor; batches are drawn by
index and augmented on the device, many steps' worth at a time (`training_chunks`: a
PixMix call has a fixed cost of about a millisecond, paid once per chunk instead of once
per step), laid out so that every step's input is one contiguous slice. Nothing in the
step waits for the device: losses stay on it and are checked once per chunk. With
Outlier Exposure the in-distribution batch and an auxiliary batch twice its size go
through one forward pass; the loss is
cross-entropy on the first part plus lambda * mean(logsumexp(z) - mean(z)) on the second
(the cross-entropy from the softmax to the uniform distribution, as in the reference).
`oe_tune` starts from the finished `baseline` model (--init) and fine-tunes with OE.

A checkpoint (model, optimiser, schedule, every RNG state, epoch, log rows) is written
atomically at each epoch end; a restarted job resumes from it and ends with the same
weights as an uninterrupted run (on the CPU).

On CUDA the forward and backward passes run under bf16 autocast, and `train.compile: true`
wraps the model in torch.compile (off by default: on the CPU it was slower in a trial,
and it costs compile time per job). The benchmarks (benchmarks/bench_training.py) drive
`run_epoch` and `train_step` directly.
"""
import argparse
import csv
import hashlib
import io
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from lib.train.augment import augment_batch
from lib.common import (derive_seed, device_name, keep_freed_memory, pick_device, replace_atomic, setup_logging,
                        sha256_file, use_threads)
from lib.config import add_extension_argument, load_extensions
from lib.data.splits import validation_split
from lib.train.models import (build_model, load_model_file, load_weights_only, save_torch_atomic, to_device_images,
                               to_fast_layout)


class NonFiniteLoss(RuntimeError):
    pass


def oe_loss(logits_id, labels, logits_ood, lam):
    """Cross-entropy on ID + lam * mean over OOD of (logsumexp(z) - mean(z))."""
    loss = F.cross_entropy(logits_id, labels)
    if logits_ood is not None and len(logits_ood):
        loss = loss + lam * (torch.logsumexp(logits_ood, dim=1) - logits_ood.mean(dim=1)).mean()
    return loss


def make_optimizer(params, tcfg, lr):
    # fused: one kernel over all parameters instead of a few per tensor; on the CPU it
    # makes the default convnet's SGD step 10x cheaper (10 ms -> 0.9 ms, 3.3M weights)
    if tcfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=tcfg["momentum"], nesterov=tcfg["nesterov"],
                               weight_decay=tcfg["weight_decay"], fused=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=tcfg["weight_decay"], fused=True)


def make_schedule(optimizer, schedule, total_steps, final_factor=0.0):
    if schedule == "cosine":
        # Per step, from 1 down to final_factor (final_lr / lr) at the last step: the reference
        # code's cosine annealing (the OE authors end at 1e-6 / lr).
        lam = lambda step: final_factor + (1 - final_factor) * 0.5 * (
            1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
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


# In-distribution images augmented per call of the augmentation: PixMix's fixed cost per
# call (about 1 ms on the CPU) is then a fraction of a microsecond per image. On the CPU
# pixmix_batch shares a call among the job's threads (shards of at least 1024 pictures):
# 8192 keeps two cores busy with 4096 pictures each.
CHUNK_IMAGES = {"cpu": 8192, "cuda": 16384}


def chunk_steps(batch, device):
    """Steps whose batches are augmented together (at least one)."""
    return max(1, CHUNK_IMAGES.get(torch.device(device).type, 4096) // batch)


def training_chunks(x_train, y_train, order, batch, steps, augment, cfg, generator, mixing=None,
                    aux=None, aux_batch=0, steps_per_chunk=None):
    """Yield (inputs [s, B + A, 1, H, W], labels [s, B]) for consecutive chunks of an epoch.

    order: a permutation of the training indices; step t uses order[t B:(t + 1) B]. The
    batches of a chunk are augmented in one call, and with `aux` (resident float images)
    each step's A = aux_batch auxiliary images, drawn with replacement, follow its B
    in-distribution images in the same slice: inputs[j] is one contiguous forward batch.
    The auxiliary images go through the same augmentation call as the in-distribution
    ones unless `outlier_exposure.augment_outliers` is false: were only the
    in-distribution images noised or mixed, the noise itself would tell the two apart and
    the OE loss could learn that instead of digit versus outlier content.
    """
    per_chunk = steps_per_chunk or chunk_steps(batch, x_train.device)
    same_augment = augment != "none" and cfg["outlier_exposure"]["augment_outliers"]
    for first in range(0, steps, per_chunk):
        s = min(per_chunk, steps - first)
        idx = order[first * batch:(first + s) * batch]
        if aux is None:
            images = augment_batch(augment, x_train[idx], generator, cfg, mixing=mixing)
            yield images.view(s, batch, *images.shape[1:]), y_train[idx].view(s, batch)
            continue
        picks = torch.randint(len(aux), (s * aux_batch,), generator=generator, device=x_train.device)
        if same_augment:
            # One call for both parts: PixMix's fixed cost is paid once per chunk.
            both = augment_batch(augment, torch.cat([x_train[idx], aux[picks]]), generator, cfg, mixing=mixing)
            images, outliers = both[:s * batch], both[s * batch:]
        else:
            images = augment_batch(augment, x_train[idx], generator, cfg, mixing=mixing)
            outliers = aux[picks]
        inputs = torch.empty((s, batch + aux_batch, *images.shape[1:]), dtype=images.dtype,
                             device=images.device)
        inputs[:, :batch] = images.view(s, batch, *images.shape[1:])
        inputs[:, batch:] = outliers.view(s, aux_batch, *images.shape[1:])
        yield inputs, y_train[idx].view(s, batch)


def train_step(model, optimizer, schedule, inputs, labels, lam, autocast):
    """One optimiser step on inputs [B (+ A), 1, H, W]: the first B = len(labels) rows are
    labelled, the rest auxiliary (OE). Returns (loss, number right), tensors on the device:
    reading them would make the host wait for the device every step."""
    with autocast:
        logits = model(inputs).float()
    n = len(labels)
    loss = oe_loss(logits[:n], labels, logits[n:] if len(inputs) > n else None, lam)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.detach(), (logits[:n].detach().argmax(1) == labels).sum()


def run_epoch(model, optimizer, schedule, x_train, y_train, batch, steps, augment, cfg, generator,
              autocast, mixing=None, aux=None, aux_batch=0, lam=0.0, describe=None, steps_per_chunk=None):
    """One epoch of `steps` steps; returns (mean loss, training accuracy) as Python floats.

    Losses stay on the device and are checked once per chunk; a non-finite one raises
    NonFiniteLoss naming its batch (`describe(batch_number, value)` gives the message).
    """
    model.train()
    device = x_train.device
    order = torch.randperm(len(x_train), generator=generator, device=device)
    losses = torch.zeros(steps, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    done = 0
    for inputs, labels in training_chunks(x_train, y_train, order, batch, steps, augment, cfg, generator,
                                          mixing, aux, aux_batch, steps_per_chunk):
        for j in range(len(inputs)):
            loss, right = train_step(model, optimizer, schedule, inputs[j], labels[j], lam, autocast)
            losses[done + j] = loss
            correct += right
        checked = losses[done:done + len(inputs)]
        done += len(inputs)
        if not bool(torch.isfinite(checked).all()):
            bad = int((~torch.isfinite(checked)).nonzero()[0])
            value = float(checked[bad])
            number = done - len(inputs) + bad + 1
            raise NonFiniteLoss(describe(number, value) if describe else
                                f"loss is {value} at batch {number}")
    return float(losses.sum()) / steps, int(correct) / (steps * batch)


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

    model = to_fast_layout(build_model(tcfg["model"], num_classes).to(device))
    if oe == "oe_tune":
        if init is None:
            raise ValueError("oe_tune needs the baseline model of the same augment and seed (--init)")
        base, _ = load_model_file(init, device)
        model.load_state_dict(base.state_dict())
        epochs, lr = ocfg["tune_epochs"], ocfg["tune_lr"]
    else:
        epochs, lr = tcfg["epochs"], tcfg["lr"]
    batch = tcfg["batch_size"]
    if batch > len(x_train):
        # The config check knows the bundled sets' sizes; this catches any other training file.
        raise ValueError(f"config key 'train.batch_size': {batch} is larger than the training split "
                         f"({len(x_train)} images of {len(data['x_train'])} once train.val_fraction is held "
                         f"out); use at most {len(x_train)}. No model was written.")
    steps_per_epoch = max(1, len(x_train) // batch)  # drop the ragged last batch: BN needs >1 sample
    optimizer = make_optimizer(model.parameters(), tcfg, lr)
    schedule = make_schedule(optimizer, tcfg["schedule"], epochs * steps_per_epoch,
                             tcfg.get("final_lr", 0.0) / lr)
    lam, aux_batch = ocfg["lambda"], ocfg["batch_factor"] * batch

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
    forward = model
    if tcfg.get("compile"):
        forward = torch.compile(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()

        def describe(number, value, epoch=epoch):
            return (f"loss is {value} at epoch {epoch + 1}, batch {number} "
                    f"({augment}/{oe}/seed{seed}); lower train.lr (now {lr}) or check the input data. "
                    "No model was written; the last checkpoint is kept.")
        mean_loss, accuracy = run_epoch(
            forward, optimizer, schedule, x_train, y_train, batch, steps_per_epoch, augment, cfg,
            generator, autocast, mixing=x_mix, aux=x_aux, aux_batch=aux_batch if use_oe else 0,
            lam=lam, describe=describe)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        n_seen = steps_per_epoch * batch
        row = {"epoch": epoch + 1, "loss": mean_loss,
               "train_accuracy": accuracy, "images_per_s": n_seen / seconds,
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
    from lib.common import load_npz
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
    add_extension_argument(p)
    a = p.parse_args(argv)
    log = setup_logging(a.log)
    load_extensions(a.extension)  # before the augmentation and the model are looked up by name
    keep_freed_memory()
    cfg = json.loads(a.config_json)
    # Snakemake's threads: 1 by default (on a few cores, parallel jobs beat one job's threads
    # fighting them); what set-threads gives under SLURM, where the job asked for that many cores.
    use_threads(a.threads, log)
    train(load_npz(a.data, required=("x_train", "y_train")), a.augment, a.oe, a.seed, cfg, a.out_model, a.out_log,
          a.checkpoint, aux=load_npz(a.aux, required=("x_train",)) if a.aux else None,
          mixing=load_npz(a.mixing, required=("images",)) if a.mixing else None,
          init=a.init, log=log)


if __name__ == "__main__":
    main()
