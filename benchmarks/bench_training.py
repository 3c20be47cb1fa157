"""Training-loop benchmarks: each a ratio of two loops timed in one process, same data and model.

    from benchmarks.bench_training import bench_training
    lines = bench_training(n_train=4096, steps=24, model="small_convnet", batch=128)
    [line["ratio"] for line in lines]

    python -m benchmarks.bench_training [--tiny] [--model small_convnet] [--steps 24]

Three lines (dicts with name, ours, reference, unit, ratio, goal, detail):

- augmentation overhead: training images/s of lib.train.loop.run_epoch with PixMix + OE (each
  step: B PixMix-ed in-distribution images + 2B auxiliary images, one forward pass)
  divided by images/s of lib.train.loop.train_step on the same inputs already augmented and
  resident (the arithmetic alone). Goal >= 0.85.
- against the usual setup: ours divided by a loop written the way PyTorch's examples/mnist
  and the OE reference code are: a map-style Dataset that runs the per-sample PIL PixMix
  (lib.train.pixmix_reference) then ToTensor and Normalize on every picture, a DataLoader with 2
  workers for it and another for the auxiliary pictures, zipped, the same model (in
  PyTorch's default NCHW layout, where ours is channels-last), optimiser and loss. Its
  workers take the second core; ours runs on one. (Our models also normalise internally,
  so that loop normalises twice: one elementwise pass per picture, kept for fidelity.)
- OE step cost: seconds per step with OE (3B pictures) divided by seconds per plain step
  (B pictures), both without augmentation. Goal: about 3, the ratio of the work; met
  when within 10% of max(3, the same ratio for the arithmetic alone on resident data),
  since on the CPU a 3x larger batch does not run at the same speed per picture.

Loops alternate `repeats` times and each keeps its best time (a shared machine's other
processes only ever slow a run down). Images/s counts in-distribution images, as the
training log does.
"""
import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from benchmarks.data import auxiliary_images, jittered_digits
from lib.config import validate_config
from lib.data.mixing import fractal_images
from lib.train.models import build_model, model_mflops, to_device_images, to_fast_layout
from lib.train.pixmix_reference import pixmix_reference
from lib.train.loop import _NoAutocast, make_optimizer, make_schedule, run_epoch, train_step, training_chunks

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class PixMixDigits(Dataset):
    """examples/mnist-style Dataset: one uint8 picture at a time through the per-sample
    PixMix, then torchvision's ToTensor and Normalize."""

    def __init__(self, images, labels, mixing, seed, pixmix=True):
        from torchvision import transforms
        self.images, self.labels, self.mixing, self.seed, self.pixmix = images, labels, mixing, seed, pixmix
        self.to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
        self.rng = None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        if self.rng is None:  # one stream per worker process
            info = torch.utils.data.get_worker_info()
            self.rng = np.random.default_rng([self.seed, info.id if info else 0])
        picture = self.images[index]
        if self.pixmix:
            mixed = pixmix_reference(picture, self.mixing[self.rng.integers(len(self.mixing))], self.rng)
            picture = (mixed * 255).round().astype(np.uint8)  # ToTensor takes the 8-bit picture
        return self.to_tensor(picture), int(self.labels[index]) if self.labels is not None else -1


def _endless_loader(dataset, batch, workers, seed):
    # one iterator that never ends, so the timed steps see a warm pipeline, as mid-epoch
    sampler = RandomSampler(dataset, replacement=True, num_samples=1 << 40,
                            generator=torch.Generator().manual_seed(seed))
    return iter(DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                           drop_last=True, persistent_workers=workers > 0, prefetch_factor=2 if workers else None))


def _best_seconds(runs, repeats):
    """Run every (name, function) alternately `repeats` times; best seconds per name."""
    best = {name: float("inf") for name, _ in runs}
    for _ in range(repeats):
        for name, run in runs:
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_training(n_train=4096, n_aux=4096, steps=24, model="small_convnet", batch=128, repeats=3,
                   n_mixing=1000, workers=2, threads=1, seed=0):
    """The three training lines (see the module docstring) as a list of dicts."""
    device = torch.device("cpu")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _bench(n_train, n_aux, steps, model, batch, repeats, n_mixing, workers, seed, device)
    finally:
        torch.set_num_threads(previous_threads)


def _bench(n_train, n_aux, steps, model_name, batch, repeats, n_mixing, workers, seed, device):
    cfg = validate_config({"train": {"model": model_name, "batch_size": batch}})
    aux_batch = cfg["outlier_exposure"]["batch_factor"] * batch
    lam = cfg["outlier_exposure"]["lambda"]
    if n_train < steps * batch:
        raise ValueError(f"n_train={n_train} is fewer than steps x batch = {steps * batch} pictures")
    images, labels = jittered_digits(n_train, seed)
    aux_images = auxiliary_images(images, n_aux, seed + 1)
    mixing_images = fractal_images(n_mixing, seed)
    x_train, y_train = to_device_images(images, device), torch.from_numpy(labels).to(device)
    x_aux, x_mix = to_device_images(aux_images, device), to_device_images(mixing_images, device)

    model = to_fast_layout(build_model(model_name, 10).to(device))  # as lib.train.loop does
    optimizer = make_optimizer(model.parameters(), cfg["train"], cfg["train"]["lr"])
    schedule = make_schedule(optimizer, "constant", 1)
    generator = torch.Generator(device=device).manual_seed(seed)
    autocast = _NoAutocast()

    def ours(augment="pixmix", aux=x_aux):
        run_epoch(model, optimizer, schedule, x_train, y_train, batch, steps, augment, cfg, generator,
                  autocast, mixing=x_mix, aux=aux, aux_batch=aux_batch if aux is not None else 0, lam=lam)

    order = torch.randperm(n_train, generator=generator)
    resident, resident_labels = next(training_chunks(
        x_train, y_train, order, batch, steps, "pixmix", cfg, generator, mixing=x_mix, aux=x_aux,
        aux_batch=aux_batch, steps_per_chunk=steps))

    def arithmetic(pictures=batch + aux_batch):
        for j in range(steps):
            train_step(model, optimizer, schedule, resident[j, :pictures], resident_labels[j], lam, autocast)

    in_stream = _endless_loader(PixMixDigits(images, labels, mixing_images, seed), batch, workers, seed)
    out_stream = _endless_loader(PixMixDigits(aux_images, None, None, seed + 1, pixmix=False),
                                 aux_batch, workers, seed + 1)

    # the usual loop's own copy of the model in PyTorch's default (NCHW) layout
    usual_model = build_model(model_name, 10).to(device)
    usual_model.load_state_dict(model.state_dict())
    usual_optimizer = make_optimizer(usual_model.parameters(), cfg["train"], cfg["train"]["lr"])
    usual_schedule = make_schedule(usual_optimizer, "constant", 1)

    def usual():
        for _ in range(steps):
            (x, y), (x_out, _) = next(in_stream), next(out_stream)
            train_step(usual_model, usual_optimizer, usual_schedule, torch.cat([x, x_out]), y, lam, autocast)

    runs = [("ours", ours), ("arithmetic", arithmetic), ("usual", usual), ("plain_step", lambda: ours("none", None)),
            ("oe_step", lambda: ours("none")), ("arithmetic_plain", lambda: arithmetic(batch))]
    for _, warm_up in runs:
        warm_up()  # allocator, worker start-up, first-call costs
    seconds = _best_seconds(runs, repeats)
    del in_stream, out_stream  # shuts the workers down

    per_s = {name: steps * batch / s for name, s in seconds.items()}
    oe_ratio = seconds["oe_step"] / seconds["plain_step"]
    arithmetic_ratio = seconds["arithmetic"] / seconds["arithmetic_plain"]
    setting = (f"{model_name} ({model_mflops(model_name):.1f} MFLOPs/image), batch {batch} + {aux_batch} OE, "
               f"{steps} steps, best of {repeats}, {torch.get_num_threads()} torch thread(s)")
    return [
        {"name": "augmentation overhead (PixMix + OE loop / pre-augmented resident data)",
         "ours": per_s["ours"], "reference": per_s["arithmetic"], "unit": "img/s",
         "ratio": per_s["ours"] / per_s["arithmetic"], "goal": ">= 0.85", "met": per_s["ours"] / per_s["arithmetic"] >= 0.85,
         "detail": setting},
        {"name": f"vs the usual setup (examples/mnist-style loop, per-sample PIL PixMix, {workers}-worker DataLoaders)",
         "ours": per_s["ours"], "reference": per_s["usual"], "unit": "img/s",
         "ratio": per_s["ours"] / per_s["usual"], "goal": "report (about 1.5 on a 2-core CPU)", "met": None,
         "detail": setting},
        {"name": "OE step cost (OE step / plain step, no augmentation)",
         "ours": seconds["oe_step"] / steps * 1e3, "reference": seconds["plain_step"] / steps * 1e3, "unit": "ms/step",
         "ratio": oe_ratio, "goal": f"about 3 (arithmetic alone: {arithmetic_ratio:.2f})",
         "met": oe_ratio <= 1.1 * max(3.0, arithmetic_ratio),
         "detail": (f"{setting}; the same steps on resident data (arithmetic alone) take {arithmetic_ratio:.2f}x: "
                    "a 3x batch runs at a different speed per picture (cache)")},
    ]


TINY = dict(n_train=256, n_aux=256, steps=2, batch=32, repeats=1, n_mixing=16, workers=1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_training", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="seconds-long run that checks the code, not the speed")
    parser.add_argument("--model", default="small_convnet")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else dict(steps=args.steps, batch=args.batch, repeats=args.repeats,
                                        n_train=max(4096, args.steps * args.batch))
    lines = bench_training(model=args.model, threads=args.threads, **sizes)
    for line in lines:
        print(f"{line['name']}: {line['ours']:,.1f} vs {line['reference']:,.1f} {line['unit']}, "
              f"ratio {line['ratio']:.2f} (goal {line['goal']})")
    return lines


if __name__ == "__main__":
    main()
