"""The PixMix mixing set: generated IFS fractals, or pictures from a staged folder.

    from lib.data.mixing import fractal_images, folder_images, save_mixing_set
    pictures = fractal_images(count=10_000, seed=0)          # uint8 [10000, 28, 28]
    pictures = folder_images("data/pixmix_fractals", count=10_000, seed=0)
    save_mixing_set("results/data/mixing.npz", pictures, source="fractals")

    python -m lib.data.mixing --source fractals --count 10000 --seed 0 --out results/data/mixing.npz
    python -m lib.data.mixing --source folder --folder PATH --count 10000 --seed 0 --out results/data/mixing.npz
    folder_fingerprint("data/pixmix_fractals")   # changes when a picture is added, removed or rewritten

The npz holds `images` (uint8 [M,28,28], white on black like MNIST) and `source` (str).

Fractals: each picture is the attractor of an iterated function system of 2-7 random
contractive affine maps, each map chosen with probability proportional to |det|,
rendered by the chaos game at render_px (>= 64) pixels, shaded by log point density and
area-resized to 28x28. Walkers start on the fixed point of a map, which lies on the
attractor, so no burn-in is needed; many systems are iterated at once with numpy.
Systems whose picture is nearly empty or nearly full (a collapsed, line-like or
exploding system) are rejected and redrawn.
"""
import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lib.common import load_npz

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# accepted share of lit pixels (> LIT_LEVEL) in a 28x28 fractal
LIT_LEVEL = 32
MIN_LIT_FRACTION = 0.04
MAX_LIT_FRACTION = 0.75

_WALKERS = 256       # chaos-game walkers per system
_STEPS = 40          # steps per walker; the first _SKIP are dropped (too few distinct points)
_SKIP = 4
_CHUNK = 256         # systems iterated together


def _random_systems(rng, n_systems):
    """Affine maps [n,7,2,3] (padded), their choice probabilities [n,7], and map counts [n].

    Each linear part is R(theta) diag(s1, s2 * reflection) R(phi) with singular values
    below 1, rescaled so that sum(s1 + 2 s2) lands in [(5 + N)/2, (6 + N)/2] for N maps:
    the range in which random systems tend to give detailed, non-degenerate shapes.
    """
    max_maps = 7
    n_maps = rng.integers(2, max_maps + 1, n_systems)
    singular = np.sort(rng.uniform(0.0, 1.0, (n_systems, max_maps, 2)), axis=2)[..., ::-1]
    present = np.arange(max_maps)[None, :] < n_maps[:, None]
    singular = singular * present[..., None]
    target = 0.5 * (5 + n_maps + rng.uniform(0, 1, n_systems))
    factor = (singular[..., 0] + 2 * singular[..., 1]).sum(1)
    singular = np.minimum(singular * (target / factor)[:, None, None], 0.98)

    theta, phi = rng.uniform(0, 2 * np.pi, (2, n_systems, max_maps))
    reflection = rng.choice([-1.0, 1.0], (n_systems, max_maps))

    def rotation(angle):
        c, s = np.cos(angle), np.sin(angle)
        return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)

    scale = np.zeros((n_systems, max_maps, 2, 2))
    scale[..., 0, 0] = singular[..., 0]
    scale[..., 1, 1] = singular[..., 1] * reflection
    linear = rotation(theta) @ scale @ rotation(phi)
    shift = rng.uniform(-1, 1, (n_systems, max_maps, 2))
    maps = np.concatenate([linear, shift[..., None]], axis=3)

    weight = np.abs(np.linalg.det(linear)) * present
    probability = weight / weight.sum(1, keepdims=True)
    return maps, probability, n_maps


def _area_resize_matrix(source, target):
    """[target, source] weights of box (area) resampling along one axis."""
    edges = np.arange(target + 1) * source / target
    lo = np.maximum(edges[:-1, None], np.arange(source)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(source)[None, :] + 1)
    return np.clip(hi - lo, 0, None) * target / source


def _render_systems(maps, probability, rng, size, render_px):
    """Chaos game for every system at once -> uint8 [n, size, size]."""
    n, max_maps = probability.shape
    walkers = n * _WALKERS
    system_of_walker = np.repeat(np.arange(n), _WALKERS)

    # fixed point of map 0: p = (I - A)^-1 b lies on the attractor
    linear, shift = maps[:, 0, :, :2], maps[:, 0, :, 2]
    start = np.linalg.solve(np.eye(2)[None] - linear, shift[..., None])[..., 0]
    x = start[system_of_walker, 0].copy()
    y = start[system_of_walker, 1].copy()

    # map choice by one sorted search: system s's cumulative probabilities live in [s, s+1]
    cumulative = np.cumsum(probability, axis=1)
    cumulative[:, -1] = 1.0
    boundaries = (cumulative + np.arange(n)[:, None]).ravel()
    table = maps.reshape(n * max_maps, 6)

    points_x = np.empty((_STEPS - _SKIP, walkers))
    points_y = np.empty((_STEPS - _SKIP, walkers))
    for step in range(_STEPS):
        u = rng.random(walkers) * 0.999999 + system_of_walker
        chosen = table[np.searchsorted(boundaries, u, side="right")]
        x, y = (chosen[:, 0] * x + chosen[:, 1] * y + chosen[:, 2],
                chosen[:, 3] * x + chosen[:, 4] * y + chosen[:, 5])
        if step >= _SKIP:
            points_x[step - _SKIP] = x
            points_y[step - _SKIP] = y

    per_system_x = points_x.reshape(-1, n, _WALKERS).transpose(1, 0, 2).reshape(n, -1)
    per_system_y = points_y.reshape(-1, n, _WALKERS).transpose(1, 0, 2).reshape(n, -1)
    finite = np.isfinite(per_system_x).all(1) & np.isfinite(per_system_y).all(1)
    per_system_x = np.where(finite[:, None], per_system_x, 0)
    per_system_y = np.where(finite[:, None], per_system_y, 0)

    # fit each attractor into the frame, keeping its aspect ratio (so a line stays thin)
    lo_x, hi_x = per_system_x.min(1), per_system_x.max(1)
    lo_y, hi_y = per_system_y.min(1), per_system_y.max(1)
    extent = np.maximum(np.maximum(hi_x - lo_x, hi_y - lo_y), 1e-12)
    margin = render_px * 0.04
    scale = (render_px - 2 * margin - 1e-6) / extent
    column = ((per_system_x - (lo_x + hi_x)[:, None] / 2) * scale[:, None] + render_px / 2)
    row = ((per_system_y - (lo_y + hi_y)[:, None] / 2) * scale[:, None] + render_px / 2)
    column = np.clip(column.astype(np.int64), 0, render_px - 1)
    row = np.clip(row.astype(np.int64), 0, render_px - 1)
    flat = (np.arange(n)[:, None] * render_px + row) * render_px + column
    counts = np.bincount(flat.ravel(), minlength=n * render_px * render_px)
    density = np.log1p(counts.reshape(n, render_px, render_px).astype(np.float64))
    density /= np.maximum(density.max(axis=(1, 2), keepdims=True), 1e-12)

    resize = _area_resize_matrix(render_px, size)
    small = resize @ density @ resize.T
    small /= np.maximum(small.max(axis=(1, 2), keepdims=True), 1e-12)
    pictures = np.round(small * 255).astype(np.uint8)
    pictures[~finite] = 0
    return pictures


def lit_fraction(pictures):
    """Share of pixels brighter than LIT_LEVEL, per picture."""
    return (np.asarray(pictures) > LIT_LEVEL).mean(axis=(1, 2))


def fractal_images(count, seed, size=28, render_px=64):
    """`count` distinct IFS fractal pictures, uint8 [count, size, size]; same seed, same pictures."""
    if render_px < 64:
        raise ValueError(f"render_px={render_px}: fractals are rendered at 64 pixels or more "
                         "before resizing; pass render_px >= 64")
    if count < 0:
        raise ValueError(f"count={count}: the number of fractal pictures cannot be negative")
    rng = np.random.default_rng(seed)
    kept = []
    n_kept = 0
    while n_kept < count:
        maps, probability, _ = _random_systems(rng, _CHUNK)
        pictures = _render_systems(maps, probability, rng, size, render_px)
        lit = lit_fraction(pictures)
        good = pictures[(lit >= MIN_LIT_FRACTION) & (lit <= MAX_LIT_FRACTION)]
        kept.append(good)
        n_kept += len(good)
    return np.concatenate(kept)[:count] if kept else np.zeros((0, size, size), np.uint8)


def image_files_under(folder):
    """Sorted paths of the image files (by extension) anywhere under folder; [] if it is not a folder."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def folder_fingerprint(folder):
    """sha256 over each image file's relative path, size and modification time under folder.

    Cheap (no picture is read), and it changes whenever a picture is added, removed or
    rewritten, so a workflow can rebuild the mixing set from a folder that changed.
    """
    root = Path(folder)
    digest = hashlib.sha256()
    for path in image_files_under(root):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _image_files(folder):
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(
            f"mixing-set folder {str(root)!r} does not exist or is not a folder; stage the "
            "pictures there (any nesting of .png/.jpg/... files) or set pixmix.mixing.source: "
            "fractals in the config")
    files = image_files_under(root)
    if not files:
        raise FileNotFoundError(
            f"mixing-set folder {str(root)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
            "stage the pictures there or set pixmix.mixing.source: fractals in the config")
    return files


def folder_images(folder, count, seed, size=28):
    """`count` grey pictures uint8 [count, size, size] from the images under `folder`.

    As the reference does for CIFAR (Resize(36) then RandomCrop(32)), each picture is
    resized so its shorter side is size * 36/32, rounded, then cropped at a random place.
    With more files than `count` a random subset is used; with fewer, files repeat
    with different crops.
    """
    files = _image_files(folder)
    rng = np.random.default_rng(seed)
    if count <= len(files):
        chosen = rng.choice(len(files), size=count, replace=False)
    else:
        chosen = np.concatenate([rng.permutation(len(files)) for _ in range(-(-count // len(files)))])[:count]
    shorter = int(round(size * 36 / 32))
    out = np.empty((count, size, size), dtype=np.uint8)
    for i, file_index in enumerate(chosen):
        path = files[file_index]
        try:
            with Image.open(path) as image:
                grey = image.convert("L")
        except OSError as error:
            raise OSError(f"mixing-set picture {str(path)!r} cannot be read as an image ({error}); "
                          "remove or replace the file") from error
        width, height = grey.size
        ratio = shorter / min(width, height)
        new_size = (max(size, int(round(width * ratio))), max(size, int(round(height * ratio))))
        grey = np.asarray(grey.resize(new_size, Image.BILINEAR))
        top = rng.integers(grey.shape[0] - size + 1)
        left = rng.integers(grey.shape[1] - size + 1)
        out[i] = grey[top:top + size, left:left + size]
    return out


def save_mixing_set(path, images, source):
    """Write {images, source} to path atomically (temporary file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file 0600; give it the mode open() would (0666 - umask)
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)
            np.savez(f, images=np.asarray(images, dtype=np.uint8), source=np.array(source))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_mixing_set(path):
    """-> (images uint8 [M,28,28], source str)."""
    data = load_npz(path, required=("images", "source"))
    return data["images"], str(data["source"])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lib.data.mixing", description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=("fractals", "folder"), default="fractals")
    parser.add_argument("--folder", help="image folder, for --source folder")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="npz to write, e.g. results/data/mixing.npz")
    args = parser.parse_args(argv)
    if args.source == "folder" and not args.folder:
        parser.error("--source folder needs --folder PATH (the staged image folder)")
    # A missing, empty or unreadable folder is the user's to fix: the message, not a traceback.
    try:
        if args.source == "folder":
            images = folder_images(args.folder, args.count, args.seed)
            source = f"folder:{args.folder}"
        else:
            images = fractal_images(args.count, args.seed)
            source = "fractals"
        save_mixing_set(args.out, images, source)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(images)} mixing pictures ({source}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
