"""The report's training-samples figure: the same training digits under each configured
augmentation, and a few pictures of the PixMix mixing set.

    from lib.report.augment_samples import augment_samples_section
    section = augment_samples_section(cfg, "results/data/digits.npz", "results/tables")
    section["png"]              # base64 PNG: one row per entry of cfg["augment"], then mixing pictures
    section["augments"]         # the rows, in order
    section["mixing"]           # {"source", "count"} of the mixing set, or None without pixmix

The mixing set is read from results/data/mixing.npz beside the tables folder (where the
mixing_set rule writes it), only when pixmix is in cfg["augment"]. Each row runs
lib.train.augment.augment_batch, the function the training jobs call, on the CPU with a
generator seeded from the config's seed: the figure is the same at every rendering, and
a row does not depend on which other augmentations are listed.

In the page: build(ctx), the section "augment_samples" of lib.report.render.SECTIONS, when
the grid trains an augmentation besides none.
"""
import base64
import io
import os

import numpy as np
import torch

# Figure without pyplot: no global state and no display needed (savefig uses Agg).
from matplotlib.figure import Figure

from lib import layout
from lib.train.augment import augment_batch
from lib.common import derive_seed, load_npz
from lib.data.mixing import load_mixing_set
from lib.report.context import input_file
from lib.train.models import to_device_images

N_DIGITS = 10     # columns: one training digit per class where labels exist


def sample_digits(data, count=N_DIGITS):
    """The first training image of each class, in class order (uint8 [<=count,28,28]).

    Without labels (-1), the first `count` training images.
    """
    x, y = data["x_train"], data.get("y_train")
    if y is None or (y < 0).all():
        return x[:count]
    firsts = [np.flatnonzero(y == label)[0] for label in np.unique(y[y >= 0])]
    return x[np.array(firsts[:count])]


def augmented_rows(digits, augments, cfg, mixing=None):
    """{augment: uint8 [N,28,28]}: `digits` under each augmentation, each from the same seed."""
    x = to_device_images(digits, torch.device("cpu"))
    mixing_t = to_device_images(mixing, torch.device("cpu")) if mixing is not None else None
    rows = {}
    for name in augments:
        generator = torch.Generator().manual_seed(derive_seed(cfg["seed"], "report", "augment_samples"))
        out = augment_batch(name, x, generator, cfg, mixing=mixing_t)
        rows[name] = (out[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return rows


def samples_figure(rows, mixing_pictures=None):
    """Grid PNG (base64): one labelled row per augmentation, then a row of mixing pictures."""
    labelled = list(rows.items())
    if mixing_pictures is not None and len(mixing_pictures):
        labelled.append(("mixing set", mixing_pictures))
    columns = max(len(images) for _, images in labelled)
    fig = Figure(figsize=(0.75 * columns + 0.9, 0.8 * len(labelled)))
    axes = fig.subplots(len(labelled), columns, squeeze=False)
    for r, (label, images) in enumerate(labelled):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.set_axis_off()
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def load_mixing(path):
    """(images uint8 [M,28,28], source) of the mixing set at path, with the fix when it is missing."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"PixMix mixing set {path} is missing, but pixmix is in 'augment'; "
                                "make it first (snakemake results/data/mixing.npz, or python -m lib.data.mixing "
                                f"--out {path})")
    return load_mixing_set(path)


def augment_samples_section(cfg, id_data_path, tables_dir):
    """The template's `augment_samples`; None when no in-distribution file is given."""
    if not id_data_path:
        return None
    data = load_npz(id_data_path, required=("x_test", "y_test"))
    digits = sample_digits(data)
    mixing, mixing_info = None, None
    if "pixmix" in cfg["augment"]:
        path = layout.mixing_file(os.path.dirname(os.path.abspath(tables_dir)))
        mixing, source = load_mixing(path)
        mixing_info = {"source": source, "count": len(mixing)}
    rows = augmented_rows(digits, cfg["augment"], cfg, mixing)
    shown_mixing = mixing[:len(digits)] if mixing is not None else None
    return {"png": samples_figure(rows, shown_mixing), "augments": list(rows), "mixing": mixing_info,
            "n_digits": len(digits)}


def build(ctx):
    """The section's data, or None (its note instead) without an augmentation to show or
    without the files the figure is drawn from."""
    cfg = ctx["cfg"]
    if all(a == "none" for a in cfg["augment"]):
        return None
    id_path = input_file(ctx, "data", layout.data_file(cfg["in_distribution"], ctx["results"]))
    pixmix = "pixmix" in cfg["augment"]
    if id_path is None or (pixmix and input_file(ctx, "mixing", layout.mixing_file(ctx["results"])) is None):
        return None
    # augment_samples_section finds the mixing set beside the tables folder, as layout.mixing_file() does.
    return augment_samples_section(cfg, id_path, layout.tables_dir(ctx["results"]))
