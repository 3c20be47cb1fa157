"""How each built-in model behaves as a Base model: accuracy, MNIST-C and MSP OOD detection.

    python -m benchmarks.baselines --id mnist-sample                      # real digits (../shared/fixtures)
    python -m benchmarks.baselines --id digits --configfile presets/demo.yaml
    python -m benchmarks.baselines --id mnist-sample --models oe_convnet --seeds 1,2,3 --epochs 3
    python -m benchmarks.baselines --id mnist-sample --models none \
        --checkpoint ../shared/fixtures/oe-mnist/baseline_epoch_9.pt      # the OE authors' own weights
    python -m benchmarks.baselines --id digits --configfile presets/demo.yaml --models oe_convnet \
        --runs none/baseline,saltpepper/oe --augment-outliers true,false     # the OE shortcut

Trains every model named by --models as a Base model (no augmentation, no Outlier
Exposure; --runs names other augment/oe pairs, with the 7x7 jigsaw of the training digits
as OE outliers and generated fractals as PixMix's mixing set, as the demo has them),
through the workflow's own training loop (lib.train.loop.train) with the recipe of
config.yaml, overridden by the `train` section of --configfile (its `model` excepted) and
by --epochs; --augment-outliers sets outlier_exposure.augment_outliers (both values: one
run each). Then, per model and seed: test accuracy, ECE, the mean top-class probability on
clean and on salt-and-pepper-noised test digits, the mean accuracy over the 15
generated MNIST-C corruptions of the test split (lib.data.corruptions, as with
`corruptions: generated`), and the MSP AUROC (lib.evaluate.scores, lib.evaluate.metrics:
OOD positive) on generated Gaussian, Bernoulli, uniform and blob noise (lib.data.registry,
10,000 images each by default) and on Fashion-MNIST's test split (Debian's
/usr/share/datasets/fashion-mnist, or data_dir/FashionMNIST/raw).

In-distribution (--id): `mnist-sample` is the 5,000 real MNIST digits of
../shared/fixtures/mnist-sample (--sample-dir), staged into a data_dir as MNIST and pinned
by their sha256 with `data_sources` (stage_mnist_sample); `digits` is scikit-learn's
bundled digits (the demo's); `mnist` is real MNIST already staged in --data-dir.

--checkpoint adds a row for trained weights loaded into oe_convnet with strict=True (the
Outlier Exposure authors' checkpoints, measured exactly like the models trained here).

Prints one row per model (mean and range over the seeds) and writes --out as JSON
(every seed's numbers, the recipe, the data). docs/baselines.md shows what it found.
"""
import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from lib.config import validate_config
from lib.data.corruptions import CORRUPTIONS, corrupt
from lib.data.real import load_real_dataset
from lib.data.registry import make_dataset
from lib.evaluate.forward import forward_in_batches
from lib.data.mixing import fractal_images
from lib.evaluate.metrics import accuracy, auroc, calibration_metrics
from lib.evaluate.scores import msp_score
from lib.train.augment import saltpepper_batch
from lib.train.loop import train
from lib.train.models import MODELS, build_model, load_weights_only

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT.parent / "shared" / "fixtures" / "mnist-sample"
NOISE_SETS = ("gaussian", "bernoulli", "uniform", "blobs")
SAMPLE_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def sample_sources(sample_dir=SAMPLE_DIR):
    """The `data_sources` entry that pins the sample's files by the sha256 in its SHA256SUMS.

    The sample is not the official MNIST: torchvision's md5s are unset (null) and the
    sha256s pinned instead, as ../shared/fixtures/mnist-sample/README.md says."""
    sums = {}
    for line in (Path(sample_dir) / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name.lstrip("*")] = digest
    return {"mnist": {"md5": {name: None for name in SAMPLE_FILES},
                      "sha256": {name: sums[name] for name in SAMPLE_FILES}}}


def stage_mnist_sample(data_dir, sample_dir=SAMPLE_DIR):
    """Copy the sample into data_dir/MNIST/raw (torchvision's layout); returns its data_sources."""
    raw = Path(data_dir) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in SAMPLE_FILES:
        if not (raw / name).exists():
            shutil.copyfile(Path(sample_dir) / name, raw / name)
    return sample_sources(sample_dir)


def load_in_distribution(name, data_dir, sample_dir=SAMPLE_DIR):
    if name == "mnist-sample":
        return load_real_dataset("mnist", data_dir, stage_mnist_sample(data_dir, sample_dir))
    if name == "digits":
        return make_dataset("digits")
    if name == "mnist":
        return load_real_dataset("mnist", data_dir)
    raise ValueError(f"--id {name!r}: use mnist-sample, digits or mnist")


def ood_sets(data_dir, size, seed=0):
    """{name: uint8 images} of the noise sets and, where a copy is installed, Fashion-MNIST's test split."""
    sets = {name: make_dataset(name, seed=seed, size=size)["x_test"] for name in NOISE_SETS}
    try:
        sets["fashion_mnist"] = load_real_dataset("fashion_mnist", data_dir)["x_test"]
    except FileNotFoundError as e:  # MissingDataError: no Debian copy and nothing staged
        logging.getLogger("benchmarks.baselines").warning("no Fashion-MNIST: %s", str(e).splitlines()[0])
    return sets


def corrupted_test_sets(id_data, seed):
    return {name: corrupt(id_data["x_test"], name, seed) for name in CORRUPTIONS}


def recipe(configfile=None, epochs=None):
    """Config overrides: the file's `train`, `outlier_exposure`, `saltpepper` and `pixmix` sections
    (not the model, the OE source or the mixing set, which this benchmark sets), then --epochs."""
    given = {}
    if configfile:
        with open(configfile) as f:
            given = yaml.safe_load(f) or {}
    overrides = {section: dict(given.get(section) or {}) for section in ("train", "outlier_exposure", "saltpepper",
                                                                          "pixmix")}
    overrides["train"].pop("model", None)
    overrides["outlier_exposure"].pop("source", None)
    overrides["pixmix"].pop("mixing", None)
    if epochs is not None:
        overrides["train"]["epochs"] = epochs
    overrides["train"]["device"] = "cpu"
    return overrides


def saltpepper_test_digits(id_data, amount, seed=0):
    """The test digits under the training-time salt-and-pepper noise (lib.train.augment), uint8."""
    x = torch.from_numpy(id_data["x_test"]).float()[:, None] / 255
    noisy = saltpepper_batch(x, torch.Generator().manual_seed(seed), amount)
    return (noisy[:, 0] * 255).round().to(torch.uint8).numpy()


def measure(model, id_data, oods, corrupted, noised, batch_size=2048):
    """Accuracy, ECE, confidence, MNIST-C mean accuracy and MSP AUROC per OOD set of one trained model."""
    device = torch.device("cpu")
    model.eval()
    id_logits, _ = forward_in_batches(model, id_data["x_test"], device, batch_size)
    id_scores = msp_score(id_logits)
    row = {"accuracy": accuracy(id_logits, id_data["y_test"]),
           "ece": calibration_metrics(id_logits, id_data["y_test"])["ece"],
           "confidence_id_saltpepper": float(-msp_score(forward_in_batches(model, noised, device, batch_size)[0]).mean())}
    per_corruption = {name: accuracy(forward_in_batches(model, x, device, batch_size)[0], id_data["y_test"])
                      for name, x in corrupted.items()}
    row["mnist_c_mean"] = float(np.mean(list(per_corruption.values())))
    row["mnist_c"] = per_corruption
    for name, x in oods.items():
        logits, _ = forward_in_batches(model, x, device, batch_size)
        row[f"auroc_{name}"] = auroc(id_scores, msp_score(logits))
        # Mean top-class probability: how sure the model is of pure noise.
        row[f"confidence_{name}"] = float(-msp_score(logits).mean())
    row["confidence_id"] = float(-id_scores.mean())
    return row


def run(id_name, models, seeds, data_dir, overrides, noise_size=10_000, study_seed=0,
        sample_dir=SAMPLE_DIR, threads=1, runs=(("none", "baseline"),), augment_outliers=(True,), checkpoints=()):
    log = logging.getLogger("benchmarks.baselines")
    id_data = load_in_distribution(id_name, data_dir, sample_dir)
    oods = ood_sets(data_dir, noise_size, seed=study_seed)
    corrupted = corrupted_test_sets(id_data, study_seed)
    torch.set_num_threads(threads)
    rows = []
    for path in checkpoints:
        model = build_model("oe_convnet")
        model.load_state_dict(load_weights_only(path), strict=True)
        noised = saltpepper_test_digits(id_data, validate_config({})["saltpepper"]["amount"])
        rows.append({"model": f"oe_convnet ({Path(path).name})", "run": "published weights", "augment_outliers": True,
                     "seed": 0, "train_s": 0.0, **measure(model, id_data, oods, corrupted, noised)})
    for name in models:
        for augment, oe in runs:
            for outliers_too in (augment_outliers if oe != "baseline" and augment != "none" else (True,)):
                cfg = validate_config({**overrides, "seed": study_seed, "train": {**overrides["train"], "model": name},
                                       "outlier_exposure": {**overrides["outlier_exposure"],
                                                            "augment_outliers": outliers_too}})
                noised = saltpepper_test_digits(id_data, cfg["saltpepper"]["amount"])
                aux = make_dataset("jigsaw", seed=study_seed, size=cfg["outlier_exposure"]["size"],
                                   id_arrays=id_data) if oe != "baseline" else None
                mixing = {"images": fractal_images(1000, seed=0)} if augment == "pixmix" else None
                for seed in seeds:
                    row = {"model": name, "run": f"{augment}/{oe}", "augment_outliers": outliers_too, "seed": seed}
                    with tempfile.TemporaryDirectory(prefix="baselines-") as folder:
                        start = time.perf_counter()
                        model, _ = train(id_data, augment, oe, seed, cfg, os.path.join(folder, "model.pt"),
                                         os.path.join(folder, "log.csv"), None, aux=aux, mixing=mixing, log=log)
                        row["train_s"] = time.perf_counter() - start
                    row.update(measure(model, id_data, oods, corrupted, noised))
                    log.info("%s: %s", {k: row[k] for k in ("model", "run", "augment_outliers", "seed")},
                             {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
                    rows.append(row)
    recipe_cfg = validate_config(overrides)
    return {"id": id_name, "train": {k: v for k, v in recipe_cfg["train"].items() if k != "model"},
            "n_train": int(len(id_data["x_train"])), "n_test": int(len(id_data["x_test"])),
            "ood_sizes": {k: int(len(v)) for k, v in oods.items()}, "rows": rows}


def summary_lines(result):
    """One markdown row per model and run: the mean over seeds (and min-max when there are several)."""
    rows = result["rows"]
    columns = (["accuracy", "ece", "confidence_id", "confidence_id_saltpepper", "mnist_c_mean"]
               + [k for k in rows[0] if k.startswith("auroc_")])
    titles = {"ece": "ECE", "confidence_id": "conf. clean", "confidence_id_saltpepper": "conf. S&P",
              "mnist_c_mean": "MNIST-C"}
    header = ["model", "run", "outliers augmented", "seeds"] + [titles.get(c, c.replace("auroc_", "AUROC "))
                                                               for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in dict.fromkeys((r["model"], r["run"], r["augment_outliers"]) for r in rows):
        mine = [r for r in rows if (r["model"], r["run"], r["augment_outliers"]) == key]
        augment, _, oe = key[1].partition("/")
        applies = augment != "none" and oe not in ("", "baseline")
        cells = [key[0], key[1], ("yes" if key[2] else "no") if applies else "—", str(len(mine))]
        for c in columns:
            values = np.array([r[c] for r in mine]) * 100
            cells.append(f"{values.mean():.2f}" + (f" ({values.min():.2f}–{values.max():.2f})"
                                                   if len(values) > 1 else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description=__doc__.split("\n")[0])
    parser.add_argument("--id", default="mnist-sample", choices=("mnist-sample", "digits", "mnist"))
    parser.add_argument("--models", default=",".join(MODELS), help="models to train; none: only --checkpoint")
    parser.add_argument("--checkpoint", action="append", default=[], help="an oe_convnet state dict to measure too")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--configfile", help="a preset whose `train` section sets the recipe")
    parser.add_argument("--runs", default="none/baseline", help="augment/oe pairs, e.g. none/baseline,saltpepper/oe")
    parser.add_argument("--augment-outliers", default="true", help="true, false or true,false (OE runs)")
    parser.add_argument("--data-dir", help="where to stage the sample / find real sets (default: a temporary folder)")
    parser.add_argument("--sample-dir", default=str(SAMPLE_DIR))
    parser.add_argument("--noise-size", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write every seed's numbers here (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="baselines-data-") as scratch:
        models = [] if args.models == "none" else args.models.split(",")
        result = run(args.id, models, [int(s) for s in args.seeds.split(",")],
                     args.data_dir or scratch, recipe(args.configfile, args.epochs), args.noise_size,
                     sample_dir=args.sample_dir, threads=args.threads,
                     runs=[tuple(r.split("/")) for r in args.runs.split(",")],
                     augment_outliers=[v.strip().lower() == "true" for v in args.augment_outliers.split(",")],
                     checkpoints=args.checkpoint)
    result["command"] = "python -m benchmarks.baselines " + " ".join(argv if argv is not None else
                                                                     __import__("sys").argv[1:])
    print(f"in-distribution {result['id']} ({result['n_train']} train / {result['n_test']} test), "
          f"recipe {json.dumps(result['train'], sort_keys=True)}, OOD sizes {result['ood_sizes']}")
    print("\n".join(summary_lines(result)))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
