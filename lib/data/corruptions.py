"""The 15 MNIST-C corruptions (Mu & Gilmer 2019), generated offline with numpy/SciPy/scikit-image.

Each corruption takes uint8 images [N, 28, 28] (white ink on black) and returns uint8
images of the same shape, at the single severity MNIST-C publishes. Randomness comes
from a numpy Generator derived from (seed, position of the corruption in CORRUPTIONS),
so every corruption is reproducible on its own and independent of the others.

    from lib.data.corruptions import CORRUPTIONS, corrupt
    x_fog = corrupt(x_test, "fog", seed=0)        # uint8 [N, 28, 28]

    python -m lib.data.corruptions --in results/data/digits.npz --seed 0 \\
        --out-dir results/data/corruptions [--corruptions fog,stripe]

The command line writes <out-dir>/<corruption>.npz with x_test (uint8) and y_test
(int64) per corruption, each through a temporary file and an atomic rename.

Where MNIST-C uses ImageMagick (motion_blur) we reimplement its motion-blur kernel:
a one-sided Gaussian (sigma 3) over 21 taps along the blur direction, edge pixels
repeated. Floats are rounded to the nearest integer when converted back to uint8.
The random draws depend on the batch: corrupt(x[:5]) is not corrupt(x)[:5].
"""
import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np
from scipy import ndimage
from skimage import feature

from lib.common import load_npz

log = logging.getLogger("mnist_safety.corruptions")

CORRUPTIONS = (
    "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale",
    "rotate", "brightness", "translate", "stripe", "fog", "spatter", "dotted_line",
    "zigzag", "canny_edges",
)

SIZE = 28
# skimage's AffineTransform helpers in MNIST-C keep this point fixed (pixel centres 0..27).
CENTRE = (SIZE - 1) / 2.0


def corrupt(images, name, seed):
    """Apply corruption `name` to uint8 images [N, 28, 28]; returns uint8 [N, 28, 28]."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (SIZE, SIZE):
        raise ValueError(f"corrupt() needs uint8 images of shape [N, 28, 28], "
                         f"got {images.dtype} {images.shape}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([int(seed), CORRUPTIONS.index(name)])
    x = images.astype(np.float64) / 255.0
    if len(x) == 0:
        return images.copy()
    return to_uint8(_OPS[name](x, rng))


def to_uint8(x01):
    return np.clip(np.rint(np.asarray(x01) * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- noise

def shot_noise(x, rng):
    """Poisson noise with 3 photons at full brightness: Poisson(3x) / 3."""
    photons = 3.0
    return np.clip(rng.poisson(x * photons) / photons, 0.0, 1.0)


def impulse_noise(x, rng):
    """Salt and pepper: 17% of pixels replaced, half by white, half by black."""
    replaced = rng.random(x.shape) < 0.17
    salt = rng.random(x.shape) < 0.5
    return np.where(replaced, salt.astype(np.float64), x)


# ---------------------------------------------------------------- blur

def _gaussian_blur(x, sigma):
    # skimage.filters.gaussian's defaults (mode 'nearest', truncate 4), per image.
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), mode="nearest", truncate=4.0)


def glass_blur(x, rng):
    """Blur (sigma 0.7), shuffle each pixel with a neighbour up/left (2 passes), blur again.

    MNIST-C visits pixels bottom-right to top-left, swapping each with probability 1/2
    with the pixel at offset (dy, dx), dy, dx in {-1, 0}. The visits are sequential
    within an image, so we loop over positions and swap in every image at once.
    """
    sigma, max_delta, passes = 0.7, 1, 2
    n = len(x)
    # MNIST-C stores the first blur as uint8 (truncating) before shuffling.
    blurred = np.floor(_gaussian_blur(x, sigma) * 255.0) / 255.0
    rows = np.arange(n)
    for _ in range(passes):
        for h in range(SIZE - max_delta, max_delta, -1):
            for w in range(SIZE - max_delta, max_delta, -1):
                swap = rng.random(n) < 0.5
                dy, dx = rng.integers(-max_delta, max_delta, size=(2, n))
                who = rows[swap]
                h2, w2 = h + dy[swap], w + dx[swap]
                here = blurred[who, h, w].copy()
                blurred[who, h, w] = blurred[who, h2, w2]
                blurred[who, h2, w2] = here
    return np.clip(_gaussian_blur(blurred, sigma), 0.0, 1.0)


def motion_blur_kernel(radius=10, sigma=3.0):
    """ImageMagick's motion-blur weights: one-sided Gaussian over 2*radius+1 taps, normalised."""
    taps = np.arange(2 * int(np.ceil(radius)) + 1, dtype=np.float64)
    weights = np.exp(-taps**2 / (2.0 * sigma**2))
    return weights / weights.sum()


def motion_blur(x, rng):
    """Blur along a random direction, angle ~ U(-45, 45) degrees (radius 10, sigma 3).

    Output pixel p averages input pixels p + round(i * (cos a, sin a)), i = 0..20, in
    (column, row) order, clamping coordinates at the border like ImageMagick.
    """
    n = len(x)
    weights = motion_blur_kernel()
    angle = np.deg2rad(rng.uniform(-45.0, 45.0, size=n))
    taps = np.arange(len(weights))
    # ImageMagick rounds half up: ceil(v - 0.5).
    dcol = np.ceil(taps[None, :] * np.cos(angle)[:, None] - 0.5).astype(np.int64)
    drow = np.ceil(taps[None, :] * np.sin(angle)[:, None] - 0.5).astype(np.int64)
    row = np.arange(SIZE)[None, :, None]
    col = np.arange(SIZE)[None, None, :]
    image = np.arange(n)[:, None, None]
    out = np.zeros_like(x)
    for i, weight in enumerate(weights):
        r = np.clip(row + drow[:, i, None, None], 0, SIZE - 1)
        c = np.clip(col + dcol[:, i, None, None], 0, SIZE - 1)
        out += weight * x[image, r, c]
    return np.clip(out, 0.0, 1.0)


# ---------------------------------------------------------------- geometry

def warp_about_centre(x, matrix_xy):
    """Bilinear warp of a batch: output(p) = input(A (p - c) + c), zero outside.

    `matrix_xy` is the 2x2 inverse map A in (column, row) = (x, y) order, as MNIST-C
    passes it to skimage.transform.warp; c is the image centre (13.5, 13.5).
    """
    a = np.asarray(matrix_xy, dtype=np.float64)
    a_rc = a[::-1, ::-1]  # (row, col) order for scipy
    matrix = np.eye(3)
    matrix[1:, 1:] = a_rc
    offset = np.zeros(3)
    offset[1:] = CENTRE - a_rc @ np.array([CENTRE, CENTRE])
    return ndimage.affine_transform(x, matrix, offset=offset, order=1,
                                    mode="grid-constant", cval=0.0)


def _warp_random_sign(x, rng, matrix_for_sign):
    signs = rng.choice(np.array([-1, 1]), size=len(x))
    out = np.empty_like(x)
    for sign in (-1, 1):
        chosen = signs == sign
        if chosen.any():
            out[chosen] = warp_about_centre(x[chosen], matrix_for_sign(sign))
    return out


def shear(x, rng):
    """Shear by 0.4 rad with a random sign, centre fixed (skimage's AffineTransform(shear=))."""
    def matrix(sign):
        s = 0.4 * sign
        return [[1.0, -np.sin(s)], [0.0, np.cos(s)]]
    return _warp_random_sign(x, rng, matrix)


def rotate(x, rng):
    """Rotate by 0.4 rad with a random sign about the centre."""
    def matrix(sign):
        r = 0.4 * sign
        return [[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]]
    return _warp_random_sign(x, rng, matrix)


def scale(x, rng):
    """Shrink the digit to 0.7x about the centre (inverse map scales by 1/0.7)."""
    return warp_about_centre(x, np.eye(2) / 0.7)


def shift_images(x, drow, dcol):
    """Move every image by whole pixels (drow down, dcol right), filling with black."""
    out = np.zeros_like(x)
    src_r = slice(max(0, -drow), SIZE - max(0, drow))
    dst_r = slice(max(0, drow), SIZE - max(0, -drow))
    src_c = slice(max(0, -dcol), SIZE - max(0, dcol))
    dst_c = slice(max(0, dcol), SIZE - max(0, -dcol))
    out[:, dst_r, dst_c] = x[:, src_r, src_c]
    return out


def translate(x, rng):
    """Move by 3 px in x and in y, each with a random sign."""
    signs = rng.choice(np.array([-1, 1]), size=(len(x), 2))
    out = np.empty_like(x)
    for srow in (-1, 1):
        for scol in (-1, 1):
            chosen = (signs[:, 0] == srow) & (signs[:, 1] == scol)
            if chosen.any():
                out[chosen] = shift_images(x[chosen], 3 * srow, 3 * scol)
    return out


# ---------------------------------------------------------------- intensity

def brightness(x, rng):
    """+0.5 on HSV value; for grey images V is the grey level itself, so clip(x + 0.5)."""
    return np.clip(x + 0.5, 0.0, 1.0)


def stripe(x, rng):
    """Invert columns 0-6 and 21-27."""
    out = x.copy()
    out[:, :, :7] = 1.0 - x[:, :, :7]
    out[:, :, 21:] = 1.0 - x[:, :, 21:]
    return out


def plasma_fractal(rng, n, mapsize=256, decay=1.4):
    """n diamond-square height maps [n, mapsize, mapsize] (float32) in [0, 1], periodic.

    As in ImageNet-C/MNIST-C: the noise added at each level is uniform in
    +-wibble**2, wibble starting at 100 and divided by `decay` per level. The batch
    is the last axis while building, so the strided writes touch contiguous runs.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    height = np.zeros((mapsize, mapsize, n), dtype=np.float32)
    wibble = 100.0
    step = mapsize

    def mean_plus_noise(total):
        noise = rng.random(total.shape, dtype=np.float32)
        return total * 0.25 + (noise * (2 * wibble * wibble) - wibble * wibble)

    while step >= 2:
        half = step // 2
        corners = height[::step, ::step]
        # Square step: centre of each square = mean of its four corners + noise.
        square = corners + np.roll(corners, -1, axis=0)
        square += np.roll(square, -1, axis=1)
        height[half::step, half::step] = mean_plus_noise(square)
        # Diamond step: edge midpoints = mean of the two corners and two centres beside them.
        centres = height[half::step, half::step]
        top = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        height[::step, half::step] = mean_plus_noise(top)
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        height[half::step, ::step] = mean_plus_noise(left)
        step //= 2
        wibble /= decay
    height -= height.min(axis=(0, 1))
    height /= height.max(axis=(0, 1))
    return np.moveaxis(height, 2, 0)


def fog(x, rng, chunk=64):
    """Add 3.0 x a plasma fractal (decay 1.4), then rescale by max / (max + 3)."""
    weight = 3.0
    haze = np.empty_like(x)
    # Chunks keep the 256x256 maps in cache; the draws stay in one sequence per call.
    for start in range(0, len(x), chunk):
        stop = min(start + chunk, len(x))
        haze[start:stop] = plasma_fractal(rng, stop - start)[:, :SIZE, :SIZE]
    peak = x.max(axis=(1, 2), keepdims=True)
    return np.clip((x + weight * haze) * peak / (peak + weight), 0.0, 1.0)


def spatter(x, rng):
    """Mud blobs of grey 63/255 (MNIST-C's severity 4 of ImageNet-C's spatter).

    Smoothed N(0.65, 0.3) noise (sigma 1) thresholded at 0.65 gives a mask; the mask
    blurred (sigma 1.5) and kept where >= 0.8 is the mud's opacity.
    """
    liquid = _gaussian_blur(rng.normal(0.65, 0.3, size=x.shape), 1.0)
    mask = (liquid > 0.65).astype(np.float64)
    mud = _gaussian_blur(mask, 1.5)
    mud[mud < 0.8] = 0.0
    return np.clip(x * (1.0 - mud) + (63.0 / 255.0) * mud, 0.0, 1.0)


# ---------------------------------------------------------------- strokes

def line_intensity(c0, r0, c1, r1):
    """Anti-aliased lines [N, 28, 28] from (c0, r0) to (c1, r1) (arrays of length N).

    Intensity log(1 - d / 2.3) + 1 clipped to [0, 1], d the vertical distance to the
    line, drawn only in columns floor(c0) .. ceil(c1) - 1, as MNIST-C draws it.
    """
    c0, r0, c1, r1 = (np.asarray(v, dtype=np.float64).reshape(-1, 1, 1) for v in (c0, r0, c1, r1))
    cols = np.arange(SIZE, dtype=np.float64)[None, None, :]
    rows = np.arange(SIZE, dtype=np.float64)[None, :, None]
    vertical = c1 == c0
    slope = (r1 - r0) / np.where(vertical, 1.0, c1 - c0)
    dist = np.clip(np.abs(rows - (slope * (cols - c0) + r0)), 0.0, 2.3 - 1e-10)
    with np.errstate(divide="ignore"):
        ink = np.clip(np.log(1.0 - dist / 2.3) + 1.0, 0.0, 1.0)
    drawn = (cols >= np.floor(c0)) & (cols < np.ceil(c1)) & ~vertical
    return np.where(drawn, ink, 0.0)


def dotted_line(x, rng):
    """A line from column 0 to 27 between random rows, with columns 0-1, 4-5, ..., 24-25 blanked."""
    r0, r1 = rng.integers(0, SIZE - 1, size=(2, len(x)))
    line = line_intensity(np.zeros(len(x)), r0, np.full(len(x), SIZE - 1.0), r1)
    gaps = (np.arange(SIZE) // 2) % 2 == 0
    line[:, :, gaps] = 0.0
    return np.clip(x + line, 0.0, 1.0)


def zigzag_vertices(drop):
    """Vertices (columns, rows relative to the start row) of MNIST-C's zigzag.

    A zigzag of tooth length 2 and height 2 along the segment from column 2 to 25
    that falls `drop` rows, rotated onto that segment.
    """
    length_a, height_b = 2.0, 2.0
    c0, c1 = 2.0, 25.0
    theta = np.arctan(drop / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    points = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - length_a) // (2 * length_a)) + 1):
        r_i = (-1) ** i * height_b
        points.append(((2 * i + 1) * length_a, r_i))
    last_full = 2 * length_a * (d // (2 * length_a))
    if d != last_full:
        # MNIST-C's closing vertex, kept as published.
        points.append((d, r_i / (2 * (d - last_full))))
    along, across = np.array(points).T
    cols = np.cos(theta) * along - np.sin(theta) * across + c0
    rows = np.sin(theta) * along + np.cos(theta) * across
    return cols, rows


def zigzag(x, rng):
    """A zigzag across the digit from a random start row, sloping by -5..4 rows."""
    n = len(x)
    start = rng.integers(0, SIZE - 1, size=n).astype(np.float64)
    drop = rng.integers(-5, 5, size=n)
    ink = np.zeros_like(x)
    for value in np.unique(drop):
        chosen = drop == value
        cols, rows = zigzag_vertices(float(value))
        offsets = start[chosen]
        k = int(chosen.sum())
        for j in range(1, len(cols)):
            ink[chosen] += line_intensity(np.full(k, cols[j - 1]), offsets + rows[j - 1],
                                          np.full(k, cols[j]), offsets + rows[j])
    # Adding non-negative strokes with a clip after each equals one clip at the end.
    return np.clip(x + ink, 0.0, 1.0)


def canny_edges(x, rng):
    """Binary Canny edge map (skimage defaults: sigma 1, thresholds 0.1 / 0.2)."""
    return np.stack([feature.canny(image) for image in x]).astype(np.float64)


_OPS = {
    "shot_noise": shot_noise, "impulse_noise": impulse_noise, "glass_blur": glass_blur,
    "motion_blur": motion_blur, "shear": shear, "scale": scale, "rotate": rotate,
    "brightness": brightness, "translate": translate, "stripe": stripe, "fog": fog,
    "spatter": spatter, "dotted_line": dotted_line, "zigzag": zigzag,
    "canny_edges": canny_edges,
}
assert tuple(_OPS) == CORRUPTIONS


# ---------------------------------------------------------------- command line

def parse_corruption_list(text):
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in CORRUPTIONS]
    if unknown or not names:
        raise ValueError(f"unknown corruption(s) {', '.join(unknown) or '(none given)'}; "
                         f"allowed: {', '.join(CORRUPTIONS)}")
    return names


def load_test_set(path):
    """x_test (uint8 [N, 28, 28]) and y_test (int64) from an npz (lib.common.load_npz checks them)."""
    arrays = load_npz(path, required=("x_test", "y_test"))
    return arrays["x_test"], arrays["y_test"].astype(np.int64)


def save_npz_atomic(path, **arrays):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_corruptions(in_path, out_dir, seed, names=CORRUPTIONS):
    """Write <out_dir>/<name>.npz for each corruption; returns the paths written."""
    x, y = load_test_set(in_path)
    paths = []
    for name in names:
        started = time.perf_counter()
        corrupted = corrupt(x, name, seed)
        path = os.path.join(out_dir, f"{name}.npz")
        save_npz_atomic(path, x_test=corrupted, y_test=y)
        seconds = time.perf_counter() - started
        log.info("%-13s %d images in %.1f s -> %s", name, len(x), seconds, path)
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in", dest="in_path", required=True, help="npz with x_test, y_test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--corruptions", default=",".join(CORRUPTIONS),
                        help="comma-separated subset (default: all 15)")
    parser.add_argument("--log", help="also append the log to this file")
    args = parser.parse_args(argv)
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log:
        os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
        handlers.append(logging.FileHandler(args.log, mode="a"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    try:
        names = parse_corruption_list(args.corruptions)
    except ValueError as error:
        parser.error(str(error))
    write_corruptions(args.in_path, args.out_dir, args.seed, names)


if __name__ == "__main__":
    main()
