"""PixMix (Hendrycks et al., 2022) batched over a whole batch on the device.

    import torch
    from lib.train.pixmix import pixmix_batch
    g = torch.Generator(device=x.device).manual_seed(0)
    mixed = pixmix_batch(x, mixing, g)                 # x [B,1,28,28], mixing [M,1,28,28], both in [0, 1]
    mixed, trace = pixmix_batch(x, mixing, g, return_trace=True)
    trace["n_plain"], trace["op_counts"]               # samples left as plain x; how often each op ran
    trace["mix_counts"], trace["partner_counts"]       # rounds by mixing op and by partner kind

The algorithm follows the reference implementation (andyzoujm/pixmix) step by step;
lib/train/pixmix_reference.py is the literal one-image-at-a-time version with PIL. Every
random choice (operation, level, sign, number of rounds, partner, mixing operation,
weights, mixing picture) is drawn per sample as a tensor; the only Python loops run
over the k rounds and over the small fixed groups of operations.

Image operations work like PIL on 8-bit images, because the reference applies them
to PIL images: the point operations (autocontrast, equalize, color, contrast,
brightness) are per-sample 256-entry lookup tables built with PIL's integer
arithmetic, posterize and solarize the same integer arithmetic on the floats; the
geometric ones are inverse affine maps in PIL's pixel convention sampled bilinearly
with zero fill (rotate with grid_sample, or, for the whole-degree angles the
augmentation draws, with bilinear taps computed once per angle; shears and
translations move each row or column by its own amount, a 1-D interpolation that is
cheaper and gives the same values); every augmented picture is rounded to the 1/255
grid, as the reference's uint8 PIL image is. At the border PIL's bilinear filter
extends the edge pixel where grid_sample blends with black; MNIST borders are black.
`color` is the identity here: PIL's Color enhancement blends an image with its own
greyscale version, which for a grey image is the image itself. It still counts as a
drawn operation, as in the reference.

Every random choice is drawn first, per block of samples (1024 on the CPU, the whole
batch on a GPU) from a generator seeded from `generator`; the mixing itself is then
deterministic. On the CPU the batch is cut into shards of whole blocks, one per torch
thread, each mixed on a helper thread with one torch thread: with this many mid-sized
ops that uses the cores better than torch's threads inside each op, and the result does
not depend on the number of threads. While the shards run, Python's switch interval is
0.2 ms (see _SHARD_SWITCH_INTERVAL_S); the caller's comes back afterwards.

Speed (CPU): call it on thousands of images at once where possible (about 1 ms fixed
cost per call and shard), and let glibc keep freed memory (the MALLOC_* variables of
the Makefile's JOB_ENV), or every call page-faults its buffers back in. Two steps go
through numpy on CPU tensors (log2, row assignment): same values, several times
faster there. benchmarks/bench_pixmix.py measures it against the reference.
"""
import concurrent.futures
import functools
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 28

OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize",
       "shear_x", "shear_y", "translate_x", "translate_y")
ALL_OPS = OPS + ("color", "contrast", "brightness", "sharpness")

# point operations computed through a per-sample 256-entry table (posterize and solarize
# are cheaper as arithmetic on the floats)
_LUT_OPS = ("autocontrast", "equalize", "color", "contrast", "brightness")
# the reference flips the sign of these with probability 1/2
_SIGNED_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# the order augmentation requests are processed in: each op, and each group of ops
# computed together, is one contiguous slice once the requests are sorted by it
_GROUP_ORDER = _LUT_OPS + ("posterize", "solarize", "rotate", "shear_x", "translate_x", "shear_y",
                           "translate_y", "sharpness")
# ops whose requests are further sorted by their whole-number magnitude
_BINNED_OPS = ("rotate", "translate_x", "translate_y")


@functools.lru_cache(maxsize=None)
def _op_tables(device):
    """(rank in _GROUP_ORDER, whether binned) for each op of ALL_OPS, on the device."""
    rank = torch.tensor([_GROUP_ORDER.index(name) for name in ALL_OPS], device=device)
    binned = torch.tensor([name in _BINNED_OPS for name in ALL_OPS], device=device)
    return rank, binned


# ---------------------------------------------------------------- 8-bit helpers

def _to_levels(x):
    """[n,1,H,W] floats in [0,1] -> int64 grey levels 0..255, flattened to [n, H*W]."""
    return x.mul(255).add_(0.5).clamp_(0, 255.5).long().flatten(1)


def _apply_lut(x, lut):
    """Map each sample's grey levels through its own 256-entry table lut [n,256]."""
    return lut.gather(1, _to_levels(x)).to(x.dtype).div_(255).view_as(x)


def _identity_lut(n, device):
    return torch.arange(256, device=device).expand(n, 256).clone()


def _truncate_to_u8(values):
    """PIL's blend: values <= 0 -> 0, >= 255 -> 255, else cast (truncation)."""
    return values.clamp(0, 255).floor().long()


def _blend_lut(degenerate, factor):
    """Table of PIL's Image.blend(degenerate_constant, image, factor) for every level.

    degenerate [n] (a constant grey level), factor [n]; PIL computes in float32.
    """
    levels = torch.arange(256, device=factor.device, dtype=torch.float32)
    degenerate = degenerate.to(torch.float32)[:, None]
    return _truncate_to_u8(degenerate + factor.to(torch.float32)[:, None] * (levels - degenerate))


def _autocontrast_table(lo, hi):
    """PIL's autocontrast table (cutoff 0) for darkest/brightest levels lo, hi [n] -> [n, 256].

    PIL stretches [lo, hi] to [0, 255] with int(i*scale + offset) in double precision;
    doing the same in float64 gives PIL's table exactly.
    """
    lo, hi = lo.double()[:, None], hi.double()[:, None]
    i = torch.arange(256, device=lo.device, dtype=torch.float64)
    span = (hi - lo).clamp_min(1)
    # a true division (255.0 / tensor multiplies by a reciprocal and is off by an ulp)
    scale = torch.full_like(span, 255.0) / span
    offset = -lo * scale
    lut = (i * scale + offset).clamp_(0, 255).floor_().long()
    return torch.where(hi > lo, lut, i.long().expand_as(lut))


def _autocontrast_lut(levels, lo=None, hi=None):
    """Per-sample autocontrast tables [n, 256]; lo, hi (darkest, brightest level) if known.

    The table depends on (lo, hi) alone, and a batch holds few distinct pairs: build
    one table per pair, then hand each sample its pair's table.
    """
    if lo is None:
        lo, hi = levels.amin(1), levels.amax(1)
    pairs, which = torch.unique(lo * 256 + hi, return_inverse=True)
    return _autocontrast_table(pairs // 256, pairs % 256).index_select(0, which)


def _equalize_lut(levels, brightest=None):
    """PIL's equalize table for each row of grey levels [n, pixels], as float32 levels.

    brightest [n]: each row's brightest level, if known.
    """
    n, pixels = levels.shape
    # int32 counts (faster to scatter than int64) from a broadcast one: no pixel-sized
    # tensor of ones to fill
    histogram = torch.zeros(n, 256, dtype=torch.int32, device=levels.device)
    histogram.scatter_add_(1, levels, torch.ones(1, 1, dtype=torch.int32, device=levels.device).expand_as(levels))
    if brightest is None:
        brightest = levels.amax(1)
    histogram = histogram.to(torch.float32)
    count_at_max = histogram.gather(1, brightest[:, None])
    # PIL: step = (pixels - count of the brightest level present) // 255; the table
    # starts at step // 2 and climbs by the histogram, integer-divided by step. In
    # float32 every count is exact, and floor(p / q) of whole numbers p < 2^24 is too:
    # a quotient that is not whole lies at least 1/q from the next whole number, more
    # than float32's rounding error (p / q) 2^-24 of it.
    step = (pixels - count_at_max).div_(255).floor_()
    below = histogram.cumsum(1).sub_(histogram)
    safe_step = step.clamp_min(1)
    lut = below.add_(safe_step.div(2).floor_()).div_(safe_step).floor_().clamp_(0, 255)
    # PIL leaves a picture with step 0 (one level, or nearly) unchanged
    return torch.where(step > 0, lut, torch.arange(256, dtype=lut.dtype, device=lut.device))


def _posterize_into(out, x, bits):
    """out <- x with each grey level L = floor(255 x + 1/2) cut to its top `bits` bits.

    With step = 2^(8 - bits), the kept value is floor(L / step) step = floor((255 x + 1/2)
    / step) step (a floor of a floor divided by a whole number). For pictures on the 1/255
    grid (255 x + 1/2) / step is at least 1/(2 step) from a whole number, so float error
    cannot move the floor; dividing the whole level by 255 last gives the exact ToTensor
    value. Five passes, no integer levels or table lookups.
    """
    step = torch.exp2(8 - bits.clamp(0, 8).to(x.dtype)).view(-1, 1, 1, 1)
    return torch.addcmul(0.5 / step, x, 255 / step, out=out).floor_().mul_(step).div_(255)


def _solarize_into(out, x, threshold):
    """out <- x with the levels L >= threshold inverted to 255 - L (L = floor(255 x + 1/2)).

    sign = clamp(2 (threshold - L) - 1, -1, 1) is exactly +1 below the threshold and -1 at
    or above it (whole numbers), and the output level is sign (L - 127.5) + 127.5.
    """
    threshold = threshold.to(x.dtype).view(-1, 1, 1, 1)
    levels = torch.mul(x, 255, out=out).add_(0.5).floor_()
    sign = torch.mul(levels, -2).add_(2 * threshold - 1).clamp_(-1, 1)
    return levels.sub_(127.5).mul_(sign).add_(127.5).div_(255)


def _contrast_lut(levels, factor):
    # PIL's Contrast blends with a flat image at int(mean + 0.5)
    mean_level = (levels.double().mean(1) + 0.5).floor()
    return _blend_lut(mean_level, factor)


def _brightness_lut(factor):
    return _blend_lut(torch.zeros_like(factor), factor)


# ---------------------------------------------------------------- geometric ops

def _affine(x, matrix, shift):
    """Sample x through inverse maps input = matrix @ output + shift (PIL pixel coords).

    matrix [n,2,2], shift [n,2]; coordinates run over pixel edges, 0..W, as in PIL's
    transform and in grid_sample with align_corners=False. Outside pixels are 0 (black).
    """
    n, _, h, w = x.shape
    # normalised u = 2 p / size - 1  =>  input_u = A u + (A half + t) / half - 1
    half = torch.tensor([w / 2, h / 2], dtype=x.dtype, device=x.device)
    a = matrix * half[None, None, :] / half[None, :, None]
    b = (matrix @ half + shift) / half - 1
    # the grid affine_grid would build, by broadcasting (affine_grid is slow on the CPU)
    u = (torch.arange(w, dtype=x.dtype, device=x.device) * 2 + 1) / w - 1
    v = (torch.arange(h, dtype=x.dtype, device=x.device) * 2 + 1) / h - 1
    # grid[n, i, j, c] = a[n, c, 0] u[j] + a[n, c, 1] v[i] + b[n, c], built channel-first so
    # the broadcast runs along contiguous rows, then viewed channel-last for grid_sample
    grid = a[:, :, 0, None, None] * u + (a[:, :, 1, None, None] * v[:, None] + b[:, :, None, None])
    grid = grid.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotation_map(degrees, size_hw):
    """PIL's rotate(degrees): inverse map about the centre with phi = -radians(degrees)."""
    phi = -degrees.to(torch.float32) * (math.pi / 180)
    cos, sin = torch.cos(phi), torch.sin(phi)
    matrix = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
    centre = torch.tensor([size_hw[1] / 2, size_hw[0] / 2], dtype=torch.float32, device=degrees.device)
    return matrix, centre - matrix @ centre


@functools.lru_cache(maxsize=256)
def _rotation_taps(degrees, height, width, device):
    """The bilinear taps of PIL's rotate(degrees) for one whole-degree angle, cached.

    Returns (index [4 H W], weights [4, H W]): output pixel p is the sum over the four
    taps t of weights[t, p] * picture[index[t H W + p]], where picture is flattened and
    extended by one black pixel (index H W) that every tap outside the frame reads. The
    map is the one rotate() hands grid_sample, computed once in float64.
    """
    phi = -math.radians(degrees)
    cos, sin = math.cos(phi), math.sin(phi)
    row = torch.arange(height, dtype=torch.float64)[:, None] + 0.5 - height / 2
    col = torch.arange(width, dtype=torch.float64)[None, :] + 0.5 - width / 2
    # input pixel coordinates of each output pixel centre, shifted so taps sit on whole numbers
    u = cos * col + sin * row + width / 2 - 0.5
    v = -sin * col + cos * row + height / 2 - 0.5
    u0, v0 = u.floor(), v.floor()
    fu, fv = u - u0, v - v0
    index, weights = [], []
    for du, dv, weight in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)),
                           (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        uu, vv = u0 + du, v0 + dv
        inside = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
        index.append(torch.where(inside, vv * width + uu, height * width).long().flatten())
        weights.append(torch.where(inside, weight, 0.0).flatten())
    return (torch.cat(index).to(device),
            torch.stack(weights).to(device=device, dtype=torch.float32))


def _rotate_padded_into(out, padded, degrees, height, width):
    """out [n, H W] <- rotate(pictures, degrees) for one whole-degree angle; `padded` [n, H W + 1]
    holds the pictures flattened and extended by one black pixel.

    Same values as rotate() (grid_sample) up to float rounding, at a fraction of the cost:
    the taps of a whole-degree angle are computed once and reused.
    """
    index, weights = _rotation_taps(int(degrees), height, width, padded.device)
    picked = padded.index_select(1, index).view(len(padded), 4, height * width).mul_(weights)
    return torch.sum(picked, 1, out=out)


def _shift_lines(x, shift, pad=None, out=None):
    """out[..., l, j] = x[..., l, j + shift[n, l]], linearly interpolated, 0 outside.

    x [n,1,L,W], shift [n,L] pixels. PIL's shears and translations move every row (or
    every column) by its own amount, so they need only this one-dimensional bilinear
    sampling: same values as grid_sample with zero padding, at a fraction of its cost.
    pad must exceed max |shift|; without it, it is read off the shifts. out (optional,
    any strides, shaped like x) receives the result.
    """
    n, channels, lines, width = x.shape
    if pad is None:
        pad = int(shift.abs().max().ceil()) + 1 if shift.numel() else 1
    whole = shift.floor()
    fraction = (shift - whole).to(x.dtype)[:, None, :, None]
    padded = F.pad(x, (pad, pad)).reshape(-1)  # the lines one after another, each 2 pad longer
    # row q of `windows` is the width + 1 values from flat position q on, a view; each line
    # takes the row where its window starts: one row gather (index_select copies whole
    # rows; indexing by four index tensors costs 3x more)
    windows = padded.as_strided((max(padded.numel() - width, 0), width + 1), (1, 1))
    # the clamp only guards the index range; |whole| <= pad - 1 by the choice of pad
    start = whole.long().clamp_(1 - pad, pad - 1) + pad
    line_starts = torch.arange(n * channels * lines, device=x.device).view(n, channels, lines) * (width + 2 * pad)
    picked = windows.index_select(0, line_starts.add_(start[:, None, :]).view(-1)).view(n, channels, lines, width + 1)
    return torch.lerp(picked[..., :width], picked[..., 1:], fraction, out=out)


def _shift_pad(severity, image_shape):
    """A pad above every shift the level scheme can draw at this severity."""
    lines = max(image_shape[-2:])
    level = max(severity, 0.1)
    largest = level / 10 * max(0.3 * lines, image_shape[-1] / 3)
    return int(math.ceil(largest)) + 1


def _line_shifts(magnitude, is_shear, lines):
    """Per-line shifts [n, lines]: a shear s moves line l by s (l + 1/2), a translation t by t."""
    centres = torch.arange(lines, device=magnitude.device, dtype=torch.float32) + 0.5
    factor = torch.where(is_shear[:, None], centres, torch.ones_like(centres))
    return magnitude.to(torch.float32)[:, None] * factor


def _per_sample_value(value, x):
    return torch.as_tensor(value, dtype=torch.float32, device=x.device).expand(x.shape[0])


# ---------------------------------------------------------------- public per-op functions
# x: float [n,1,H,W] in [0,1]; magnitudes: a number or one value per sample, in the
# units PIL's call takes (degrees, shear factor, pixels, bits, 0..256 threshold, factor).

def autocontrast(x):
    return _apply_lut(x, _autocontrast_lut(_to_levels(x)))


def equalize(x):
    return _apply_lut(x, _equalize_lut(_to_levels(x)))


def posterize(x, bits):
    bits = torch.as_tensor(bits, device=x.device).expand(x.shape[0])
    return _posterize_into(torch.empty_like(x), x, bits)


def solarize(x, threshold):
    threshold = torch.as_tensor(threshold, device=x.device).expand(x.shape[0])
    return _solarize_into(torch.empty_like(x), x, threshold)


def color(x, factor):
    """Identity on grey images (see the module docstring)."""
    return x.clone()


def contrast(x, factor):
    factor = torch.as_tensor(factor, dtype=torch.float32, device=x.device).expand(x.shape[0])
    return _apply_lut(x, _contrast_lut(_to_levels(x), factor))


def brightness(x, factor):
    factor = torch.as_tensor(factor, dtype=torch.float32, device=x.device).expand(x.shape[0])
    return _apply_lut(x, _brightness_lut(factor))


def sharpness(x, factor):
    """PIL's Sharpness: blend with the SMOOTH-filtered image (3x3, centre 5, border kept)."""
    factor = torch.as_tensor(factor, dtype=torch.float32, device=x.device).expand(x.shape[0])
    levels = _to_levels(x).to(torch.float32).view_as(x)
    kernel = torch.ones(1, 1, 3, 3, dtype=torch.float32, device=x.device)
    kernel[0, 0, 1, 1] = 5
    smooth = (F.conv2d(levels, kernel / 13) + 0.5).floor().clamp(0, 255)
    degenerate = levels.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    out = _truncate_to_u8(degenerate + factor[:, None, None, None] * (levels - degenerate))
    return out.to(x.dtype) / 255


def rotate(x, degrees):
    return _affine(x, *_rotation_map(_per_sample_value(degrees, x), x.shape[-2:]))


def shear_x(x, shear):
    """PIL transform (1, s, 0, 0, 1, 0): input x = x + s y, a shear about the top-left corner."""
    shear = _per_sample_value(shear, x)
    return _shift_lines(x, _line_shifts(shear, torch.ones_like(shear, dtype=torch.bool), x.shape[-2]))


def shear_y(x, shear):
    """PIL transform (1, 0, 0, s, 1, 0): input y = s x + y."""
    shear = _per_sample_value(shear, x)
    shifts = _line_shifts(shear, torch.ones_like(shear, dtype=torch.bool), x.shape[-1])
    return _shift_lines(x.transpose(-1, -2), shifts).transpose(-1, -2)


def translate_x(x, pixels):
    """PIL transform (1, 0, t, 0, 1, 0): input x = x + t, so the picture moves by -t."""
    pixels = _per_sample_value(pixels, x)
    return _shift_lines(x, _line_shifts(pixels, torch.zeros_like(pixels, dtype=torch.bool), x.shape[-2]))


def translate_y(x, pixels):
    pixels = _per_sample_value(pixels, x)
    shifts = _line_shifts(pixels, torch.zeros_like(pixels, dtype=torch.bool), x.shape[-1])
    return _shift_lines(x.transpose(-1, -2), shifts).transpose(-1, -2)


# ---------------------------------------------------------------- the random augmentation

# op -> (offset, direction, scale, truncated): magnitude = offset + direction * scaled,
# scaled = level/10 * scale, truncated to an integer where the reference uses int_parameter
def _magnitude_rules(image_size):
    enhance = (0.1, 1, 1.8, False)
    return {
        "autocontrast": (0, 1, 0, False), "equalize": (0, 1, 0, False),
        "posterize": (4, -1, 4, True), "rotate": (0, 1, 30, True), "solarize": (256, -1, 256, True),
        "shear_x": (0, 1, 0.3, False), "shear_y": (0, 1, 0.3, False),
        "translate_x": (0, 1, image_size / 3, True), "translate_y": (0, 1, image_size / 3, True),
        "color": enhance, "contrast": enhance, "brightness": enhance, "sharpness": enhance,
    }


def op_magnitudes(op_ids, level, negate, image_size=IMAGE_SIZE):
    """The reference's level scheme, vectorised: level ~ U(0.1, severity) per sample.

    op_ids index ALL_OPS; returns the magnitude in each op's own unit (see the per-op
    functions), negated where `negate` for the ops the reference flips. int() in the
    reference truncates; levels are positive, so floor is the same.
    """
    rules = _magnitude_tables(image_size, level.device, level.dtype).index_select(0, op_ids.flatten())
    offset, direction, scale, truncated, signed = rules.T.reshape(5, *op_ids.shape)
    scaled = level / 10 * scale
    scaled = torch.where(truncated > 0, scaled.floor(), scaled)
    magnitude = offset + direction * scaled
    return torch.where((signed > 0) & negate, -magnitude, magnitude)


@functools.lru_cache(maxsize=None)
def _magnitude_tables(image_size, device, dtype):
    """_magnitude_rules as one table [op, (offset, direction, scale, truncated, signed)];
    one lookup per draw instead of five (whole numbers and flags are exact in floats)."""
    rules = _magnitude_rules(image_size)
    return torch.tensor([[float(value) for value in rules[name]] + [float(name in _SIGNED_OPS)]
                         for name in ALL_OPS], dtype=dtype, device=device)


# the table ops that take a magnitude (autocontrast and equalize are built from each
# picture's own levels in _augment_requests)
_LUTS = {
    "color": lambda levels, magnitude: _identity_lut(levels.shape[0], levels.device),
    "contrast": _contrast_lut,
    "brightness": lambda levels, magnitude: _brightness_lut(magnitude),
}


def _levels_of_values(values):
    """Grey levels of float values in [0, 1], the rounding _to_levels uses, as int64."""
    return values.mul(255).add_(0.5).clamp_(0, 255.5).long()


def _translate_lines_(out, source, pixels, dim):
    """out <- source moved by whole pixels along dim (-1: x, -2: y) as PIL reads it,
    out[..., j] = source[..., j + pixels], black where that falls outside."""
    size = source.shape[dim]
    if abs(pixels) >= size:
        return out.zero_()
    if pixels >= 0:
        out.narrow(dim, 0, size - pixels).copy_(source.narrow(dim, pixels, size - pixels))
        out.narrow(dim, size - pixels, pixels).zero_()
    else:
        out.narrow(dim, -pixels, size + pixels).copy_(source.narrow(dim, 0, size + pixels))
        out.narrow(dim, 0, -pixels).zero_()
    return out


def _max_rotation(severity):
    """Above every whole-degree angle the level scheme can draw: int(level 30 / 10), level < severity."""
    return int(math.floor(3 * max(severity, 0.1))) + 1


def _draw_ops(shape, generator, severity, all_ops, image_size, device):
    """One augmentation draw per entry of `shape`: (op index into ALL_OPS, magnitude)."""
    n_ops = len(ALL_OPS) if all_ops else len(OPS)
    op_ids = torch.randint(0, n_ops, shape, generator=generator, device=device)
    level, negate = _level_and_sign(torch.rand(shape, generator=generator, device=device),
                                    torch.rand(shape, generator=generator, device=device), severity)
    return op_ids, op_magnitudes(op_ids, level, negate, image_size)


def _level_and_sign(u_level, u_sign, severity):
    """The reference's level ~ U(0.1, severity) and sign flip (probability 1/2) from uniforms."""
    return u_level.mul(severity - 0.1).add_(0.1), u_sign > 0.5


def _augment_requests(x, sample_index, op_ids, magnitude, severity):
    """aug(x[sample_index[r]]) for every request r, with its drawn op and magnitude.

    Returns (augmented pictures in processing order, order): augmented[j] belongs to
    request order[j]. Requests are sorted by op so that every op works on a contiguous
    slice: one gather in, no scatter out. Translations are further sorted by their
    (whole-pixel) distance and rotations by their (whole-degree) angle: each distance is
    one slice copy, exact on 8-bit pictures, and each angle reuses one set of
    interpolation taps.
    """
    device = x.device

    # sort key: op group, then the distance of a translation or the angle of a rotation,
    # offset by `centre` to be >= 0
    pad = _shift_pad(severity, x.shape)
    centre = max(pad, _max_rotation(severity))
    width = 2 * centre + 1
    rank, binned = _op_tables(device)
    amount = torch.where(binned[op_ids], magnitude.round().long().clamp(-centre, centre), 0)
    key = rank[op_ids] * width + amount + centre
    order = torch.argsort(key, stable=True)
    bin_ends = torch.bincount(key, minlength=len(_GROUP_ORDER) * width).cumsum(0).tolist()
    span = {name: (bin_ends[i * width - 1] if i else 0, bin_ends[(i + 1) * width - 1])
            for i, name in enumerate(_GROUP_ORDER)}

    def bins(name):
        """(amount, first, last) of every non-empty (op, amount) slice of a binned op."""
        first_bin = _GROUP_ORDER.index(name) * width
        for b in range(first_bin, first_bin + width):
            first, last = (bin_ends[b - 1] if b else 0), bin_ends[b]
            if last > first:
                yield b - first_bin - centre, first, last

    source = x.index_select(0, sample_index[order])
    magnitude = magnitude[order]
    out = torch.empty_like(source)

    start, end = span[_LUT_OPS[0]][0], span[_LUT_OPS[-1]][1]
    if end > start:
        levels = _to_levels(source[start:end])
        # tables of float levels, divided by 255 before the lookup: no per-pixel conversion
        lut = torch.empty(end - start, 256, dtype=x.dtype, device=device)
        for name in _LUT_OPS:
            a, b = span[name]
            if b > a and name in ("autocontrast", "equalize"):
                # darkest and brightest level from the float pictures (a float min/max is
                # much cheaper than an integer one; the rounding to levels is monotone)
                flat = source[a:b].flatten(1)
                brightest = _levels_of_values(flat.amax(1))
                lut[a - start:b - start] = (
                    _autocontrast_lut(None, _levels_of_values(flat.amin(1)), brightest) if name == "autocontrast"
                    else _equalize_lut(levels[a - start:b - start], brightest))
            elif b > a:
                lut[a - start:b - start] = _LUTS[name](levels[a - start:b - start], magnitude[a:b])
        lut.div_(255)
        torch.gather(lut, 1, levels, out=out[start:end].view(end - start, -1))

    a, b = span["posterize"]
    if b > a:
        _posterize_into(out[a:b], source[a:b], magnitude[a:b])
    a, b = span["solarize"]
    if b > a:
        _solarize_into(out[a:b], source[a:b], magnitude[a:b])

    a, b = span["rotate"]
    if b > a:
        rows, columns = x.shape[-2:]
        # flattened and extended by one black pixel once; then one slice per angle
        padded = F.pad(source[a:b].reshape(b - a, rows * columns), (0, 1))
        turned = out[a:b].view(b - a, rows * columns)
        for degrees, first, last in bins("rotate"):
            _rotate_padded_into(turned[first - a:last - a], padded[first - a:last - a], degrees, rows, columns)
        out[a:b].mul_(255).round_().div_(255)

    for shear, transposed in (("shear_x", False), ("shear_y", True)):
        a, b = span[shear]
        if b > a:
            lines = source[a:b].transpose(-1, -2) if transposed else source[a:b]
            shifts = _line_shifts(magnitude[a:b], torch.ones(b - a, dtype=torch.bool, device=device),
                                  lines.shape[-2])
            if transposed:  # a strided write is slower than this copy
                out[a:b] = _shift_lines(lines, shifts, pad).mul_(255).round_().div_(255).transpose(-1, -2)
            else:
                _shift_lines(lines, shifts, pad, out=out[a:b]).mul_(255).round_().div_(255)

    for translate, dim in (("translate_x", -1), ("translate_y", -2)):
        for distance, a, b in bins(translate):
            _translate_lines_(out[a:b], source[a:b], distance, dim)
        a, b = span[translate]
        if b > a:
            # pictures off the 1/255 grid get onto it, as every augmented picture does
            out[a:b].mul_(255).round_().div_(255)

    a, b = span["sharpness"]
    if b > a:
        out[a:b] = sharpness(source[a:b], magnitude[a:b])
    return out, order


def augment_batch(x, generator, severity=3.0, all_ops=False):
    """One randomly drawn operation per sample, as the reference's augment_input.

    Returns (augmented images on the 1/255 grid, op index per sample into ALL_OPS,
    magnitude per sample in the unit of the op's function above).
    """
    everyone = torch.arange(x.shape[0], device=x.device)
    op_ids, magnitude = _draw_ops(x.shape[:1], generator, severity, all_ops, x.shape[-1], x.device)
    augmented, order = _augment_requests(x, everyone, op_ids, magnitude, severity)
    return torch.empty_like(augmented).index_copy_(0, order, augmented), op_ids, magnitude


# ---------------------------------------------------------------- mixing

def _per_sample(value, like):
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.view(-1, *([1] * (like.dim() - 1))) if value.dim() == 1 else value


def _add_into(x1, x2, a, b):
    """x1 <- a x1 + b x2 + (1 - a - b) / 2, the additive mixing rewritten, in place."""
    return x1.mul_(a).addcmul_(x2, b).add_((1 - a - b) / 2)


def _log2_(t):
    """In-place log2. On the CPU numpy's SIMD log2 is about 5x faster than torch's
    (measured on this project's machines), and the logs are most of a multiply."""
    if t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad:
        values = t.numpy()
        np.log2(values, out=values)
        return t
    return t.log2_()


def _copy_rows_(dest, index, rows):
    """dest[index] = rows along dim 0 (index_copy_); numpy's row assignment is about
    3x faster than torch's index_copy_ on the CPU, and these copies run every round."""
    if dest.device.type == "cpu" and dest.is_contiguous() and rows.is_contiguous():
        dest.numpy()[index.numpy()] = rows.numpy()
        return dest
    return dest.index_copy_(0, index, rows)


def _multiply_into(x1, x2, a, b, clip=False):
    """x1 <- (2 x1)^a max(2 x2, 1e-37)^b / 2 in the log domain, in place (x2 is spoiled).

    With clip, the result is also clipped to [0, 1] at no extra cost, by capping the
    exponent at 0 (the result is never negative).

    = 2^(a log2 x1 + b log2 max(x2, 5e-38) + a + b - 1): two logs and one exp2 cost
    less than two general powers (exp2 is 4x cheaper than exp on the CPU). log(0) and
    underflowing exponents take slow paths (10x), so zeros are clamped to a tiny normal
    float and the exponent kept above -125; 0^a = 0 (a > 0) is restored at the end by
    multiplying with sign(x1).
    """
    return _multiply_by_log2_into(x1, _clamped_log2_(x2), a, b, clip)


def _clamped_log2_(t):
    """t <- log2(max(t, 5e-38)) in place: the second factor's log in _multiply_into."""
    return _log2_(t.clamp_min_(5e-38))


_log2_cache = (None, -1, None)


def _mixing_log2(mixing):
    """_clamped_log2_ of the mixing pictures, kept while the same tensor, unchanged, comes
    back (a training job passes one set to every call; 10,000 pictures take about 1 ms).
    The cache holds the last set and its logs until another set comes."""
    global _log2_cache
    cached, version, logs = _log2_cache
    if cached is not mixing or version != mixing._version:
        logs = _clamped_log2_(mixing.detach().clone())
        _log2_cache = (mixing, mixing._version, logs)
    return logs


def _multiply_by_log2_into(x1, log2_x2, a, b, clip=False):
    """_multiply_into with the second factor given as _clamped_log2_(x2): the mixing
    pictures' logs are computed once per mixing set, not in every round that draws one."""
    nonzero = torch.sign(x1)
    _clamped_log2_(x1).mul_(a)
    x1.addcmul_(log2_x2, b)
    return x1.add_(a + b - 1).clamp_(min=-125, max=0 if clip else None).exp2_().mul_(nonzero)


def mix_add(x1, x2, a, b):
    """The reference's additive mixing, unclipped: (a (2 x1 - 1) + b (2 x2 - 1) + 1) / 2.

    x1, x2 in [0, 1]; a, b numbers or one weight per sample.
    """
    a, b = _per_sample(a, x1), _per_sample(b, x1)
    return _add_into(x1.clone(), x2, a, b)


def mix_multiply(x1, x2, a, b):
    """The reference's geometric mixing, unclipped: (2 x1)^a max(2 x2, 1e-37)^b / 2.

    x1, x2 in [0, 1]; a > 0 and b numbers or one weight per sample.
    """
    a, b = _per_sample(a, x1), _per_sample(b, x1)
    return _multiply_into(x1.clone(), x2.clone(), a, b)


def _weights_from_uniforms(kind, u_a, u_b, beta):
    """Per-sample (a, b) of the reference's get_ab by inverse-CDF sampling of uniforms.

    U^(1/beta) ~ Beta(beta, 1) and 1 - U^(1/beta) ~ Beta(1, beta); half the time (kind
    < 1/2) a ~ Beta(beta, 1), b ~ Beta(1, beta), else a = 1 + Beta(1, beta), b = -Beta(1,
    beta). 1 - u_a is in (0, 1], so a > 0, as the log-domain multiply needs.
    """
    first_kind = kind < 0.5
    root_a = (1 - u_a).pow_(1 / beta)
    beta_b = 1 - u_b.pow(1 / beta)
    a = torch.where(first_kind, root_a, 2 - root_a)
    b = torch.where(first_kind, beta_b, -beta_b)
    return a, b


def pixmix_batch(x, mixing, generator, k=4, beta=3.0, severity=3.0, all_ops=False,
                 return_trace=False):
    """PixMix every sample of x with one mixing picture drawn per sample.

    x [B,1,H,W] and mixing [M,1,H,W]: floats in [0, 1] on generator's device.
    Returns the mixed batch (same shape and dtype, values in [0, 1]); with
    return_trace also {"n_samples", "n_plain", "op_counts": {op name: count},
    "mix_counts": {"add", "multiply"}, "partner_counts": {"augmented", "mixing"}}.
    On the CPU, larger batches (thousands) amortise the fixed cost per call, and the
    batch is shared among torch.get_num_threads() threads; the result does not depend on
    how many (beyond float rounding in the last bit).
    """
    if x.dim() != 4 or mixing.dim() != 4 or x.shape[1:] != mixing.shape[1:]:
        raise ValueError(f"pixmix_batch needs x [B,1,H,W] and mixing [M,1,H,W] of the same "
                         f"picture size; got {tuple(x.shape)} and {tuple(mixing.shape)}")
    n, device = x.shape[0], x.device
    # each block of samples draws from its own generator, seeded from the caller's: shards
    # of whole blocks then draw in parallel, and no value depends on how many shards
    block = _PLAN_BLOCK if device.type == "cpu" else max(n, 1)
    seeds = torch.randint(0, 2 ** 62, (-(-n // block),), generator=generator, device=generator.device).tolist()
    mixed = torch.empty_like(x)
    mixing_log2 = _mixing_log2(mixing) if k else None

    def shard(first_block, last_block):
        """Draw the plan of these blocks, then mix their rows; returns the plan."""
        first, last = first_block * block, min(last_block * block, n)
        plan = _draw_plan([min(block, n - b * block) for b in range(first_block, last_block)],
                          seeds[first_block:last_block], mixing.shape[0], k, beta, severity, all_ops, device)
        _pixmix_rows(mixed[first:last], x[first:last], mixing, mixing_log2, plan, k, severity)
        return plan

    shards = min(torch.get_num_threads(), n // _MIN_SHARD, len(seeds)) if device.type == "cpu" else 1
    if shards > 1:
        # Shards run on helper threads with one torch thread each. The calling thread does
        # no torch work meanwhile: its own torch threads would spin-wait for more work on
        # the cores the shards need.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval, _SHARD_SWITCH_INTERVAL_S))
        try:
            pending = [_helper_threads(shards).submit(shard, len(seeds) * i // shards,
                                                      len(seeds) * (i + 1) // shards)
                       for i in range(shards)]
            # wait for every shard, also when one fails, so that no thread is left writing
            concurrent.futures.wait(pending)
        finally:
            sys.setswitchinterval(switch_interval)
        plans = [done.result() for done in pending]
    else:
        plans = [shard(0, len(seeds))] if n else []
    if not return_trace:
        return mixed
    plan = _concat_plans(plans) if plans else \
        _draw_plan([0], [0], mixing.shape[0], k, beta, severity, all_ops, device)
    return mixed, _trace(plan, len(ALL_OPS) if all_ops else len(OPS))


def _draw_plan(block_sizes, seeds, n_mixing, k, beta, severity, all_ops, device):
    """Every random choice of PixMix for consecutive blocks of samples, one column per sample.

    Block b draws its numbers from a generator seeded with seeds[b]; the weights are
    then derived from all blocks at once (the magnitudes later, for the slots that are
    used: op_magnitudes of op_ids, level and negate). Drawing it all first (one draw
    per augmentation slot, used or not) makes the mixing itself deterministic, so the
    batch can be cut into shards of whole blocks without changing a value.
    """
    n_ops = len(ALL_OPS) if all_ops else len(OPS)
    # rows of `uniforms`: start kind, then k rows each of partner kind, mixing op, weight
    # kind, u_a, u_b; then k + 1 rows each of level and sign of the augmentation slots
    # (slot 0 is the start picture, slots 1..k the partners of rounds 0..k-1)
    draws = []
    for size, seed in zip(block_sizes, seeds):
        generator = torch.Generator(device=device).manual_seed(seed)
        draws.append((torch.rand(3 + 7 * k, size, generator=generator, device=device),
                      torch.randint(0, n_ops, (k + 1, size), generator=generator, device=device),
                      torch.randint(0, n_mixing, (size,), generator=generator, device=device),
                      torch.randint(0, k + 1, (size,), generator=generator, device=device)))
    uniforms, op_ids, picks, rounds = (torch.cat(column, dim=-1) for column in zip(*draws))
    a, b = _weights_from_uniforms(uniforms[1 + 2 * k:1 + 3 * k], uniforms[1 + 3 * k:1 + 4 * k],
                                  uniforms[1 + 4 * k:1 + 5 * k], beta)
    level, negate = _level_and_sign(uniforms[1 + 5 * k:2 + 6 * k], uniforms[2 + 6 * k:], severity)
    return {
        "picks": picks, "rounds": rounds, "start_augmented": uniforms[0] < 0.5,
        "partner_augmented": uniforms[1:1 + k] < 0.5, "use_multiply": uniforms[1 + k:1 + 2 * k] < 0.5,
        "a": a, "b": b, "op_ids": op_ids, "level": level, "negate": negate,
    }


def _concat_plans(plans):
    """One plan of consecutive samples from the plans of consecutive blocks."""
    return {key: torch.cat([p[key] for p in plans], dim=-1) for key in plans[0]}


def _trace(plan, n_ops):
    k, rounds = plan["use_multiply"].shape[0], plan["rounds"]
    active = torch.arange(k, device=rounds.device)[:, None] < rounds[None, :]
    wants_aug = torch.cat([plan["start_augmented"][None], plan["partner_augmented"] & active])
    counts = torch.bincount(plan["op_ids"][wants_aug], minlength=n_ops).tolist()
    n_rounds, n_multiply = int(active.sum()), int((plan["use_multiply"] & active).sum())
    n_augmented_partners = int((plan["partner_augmented"] & active).sum())
    return {"n_samples": rounds.numel(),
            "n_plain": int((~plan["start_augmented"] & (rounds == 0)).sum()),
            "op_counts": dict(zip(ALL_OPS[:n_ops], counts)),
            "mix_counts": {"add": n_rounds - n_multiply, "multiply": n_multiply},
            "partner_counts": {"augmented": n_augmented_partners, "mixing": n_rounds - n_augmented_partners}}


# pictures per shard below which another thread costs more than it saves
_MIN_SHARD = 1024
# Python's switch interval while shards run. Every torch call drops the interpreter lock
# and takes it back; a shard back from a long kernel can find the other shard making
# short calls, taking the lock back each time before the waiting thread wakes, until the
# interval runs out (5 ms by default). 0.2 ms bounds that wait: 1-5% faster on two cores
# (measured in benchmarks/RESULTS.md).
_SHARD_SWITCH_INTERVAL_S = 0.0002
# pictures per block of random draws (see pixmix_batch)
_PLAN_BLOCK = 1024
_helper_pool = None


def _helper_threads(count):
    """A process-wide pool of `count` Python threads whose torch ops run on one thread.

    Shards of a batch on helper threads with one torch thread each share the cores better
    than torch's threads inside each of their many mid-sized ops; torch and numpy release
    the GIL inside their kernels."""
    global _helper_pool
    if _helper_pool is None or _helper_pool._max_workers != count:
        if _helper_pool is not None:
            _helper_pool.shutdown(wait=False)
        _helper_pool = concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix="pixmix",
                                                             initializer=_one_torch_thread)
    return _helper_pool


def _forget_helper_threads():
    # a forked child has the pool object but none of its threads: it must make its own
    global _helper_pool
    _helper_pool = None


os.register_at_fork(after_in_child=_forget_helper_threads)


def _one_torch_thread():
    torch.get_num_threads()  # torch sets a new thread's count on first use: let it happen first
    torch.set_num_threads(1)


def _pixmix_rows(out, x, mixing, mixing_log2, plan, k, severity):
    """out <- PixMix of x as the plan (one column per row of x) says; mixing_log2 is
    _clamped_log2_(mixing), the form in which multiplying rounds take a mixing picture."""
    n, device = x.shape[0], x.device
    picks, rounds, start_augmented = (plan[key] for key in ("picks", "rounds", "start_augmented"))
    partner_augmented, use_multiply, a, b = (plan[key] for key in ("partner_augmented", "use_multiply", "a", "b"))

    # Every aug(x) is an independent draw on the original x, so all of them (the start
    # picture, slot 0, and the partners of rounds 0..k-1, slots 1..k) go through one call.
    active = torch.arange(k, device=device)[:, None] < rounds[None, :]
    wants_aug = torch.cat([start_augmented[None], partner_augmented & active])
    slot_index, sample_index = wants_aug.nonzero(as_tuple=True)
    op_ids = plan["op_ids"][slot_index, sample_index]
    magnitude = op_magnitudes(op_ids, plan["level"][slot_index, sample_index],
                              plan["negate"][slot_index, sample_index], x.shape[-1])
    augmented, order = _augment_requests(x, sample_index, op_ids, magnitude, severity)
    row_of = torch.full((k + 1, n), -1, dtype=torch.long, device=device)
    row_of[slot_index[order], sample_index[order]] = torch.arange(order.numel(), device=device)

    # Round i works on the samples with more than i rounds, ordered by (mixing op, whether
    # they mix again, partner kind): each op, each partner source and the samples that
    # finish are contiguous slices, so the running pictures move only once per round.
    # Samples without rounds (key 8) come last. Round 0 also orders by the kind of start
    # picture, so that the starts are gathered straight into place from x or from the
    # augmentations.
    continues = torch.arange(1, k + 1, device=device)[:, None] < rounds[None, :]
    key = torch.where(active, use_multiply.long() * 4 + continues.long() * 2 + partner_augmented.long(), 8)
    first_key = (key[0] if k else torch.full_like(rounds, 8)) * 2 + start_augmented.long()
    first_order = torch.argsort(first_key, stable=True)
    first_ends = torch.bincount(first_key, minlength=18).cumsum(0).tolist()
    samples_by_round = torch.argsort(key[1:], dim=1, stable=True) if k > 1 else None
    blocks = [first_ends[1:16:2]] + (torch.bincount(
        (key[1:] + 9 * torch.arange(k - 1, device=device)[:, None]).flatten(),
        minlength=9 * (k - 1)).view(k - 1, 9)[:, :8].cumsum(1).tolist() if k > 1 else [])

    current = torch.empty_like(x)
    start_rows = row_of[0, first_order]
    for sub_block in range(18):
        begin, end = (first_ends[sub_block - 1] if sub_block else 0), first_ends[sub_block]
        if end > begin:
            source, rows = (augmented, start_rows) if sub_block % 2 else (x, first_order)
            torch.index_select(source, 0, rows[begin:end], out=current[begin:end])
    n_active = blocks[0][-1]
    _copy_rows_(out, first_order[n_active:], current[n_active:])
    current = current[:n_active]
    for i in range(k):
        ends = blocks[i]
        if not ends[-1]:
            break
        samples = (first_order if i == 0 else samples_by_round[i - 1])[:ends[-1]]
        partner = torch.empty_like(current)
        mixing_rows, augmented_rows = picks[samples], row_of[i + 1, samples]
        for block in range(8):
            begin, end = (ends[block - 1] if block else 0), ends[block]
            if end > begin:
                if block % 2:  # augmented partners; those of multiplying rounds in the log domain
                    torch.index_select(augmented, 0, augmented_rows[begin:end], out=partner[begin:end])
                    if block > 4:
                        _clamped_log2_(partner[begin:end])
                else:
                    torch.index_select(mixing_log2 if block >= 4 else mixing, 0, mixing_rows[begin:end],
                                       out=partner[begin:end])
        weights_a, weights_b = a[i, samples, None, None, None], b[i, samples, None, None, None]
        n_add = ends[3]
        _add_into(current[:n_add], partner[:n_add], weights_a[:n_add], weights_b[:n_add]).clamp_(0, 1)
        _multiply_by_log2_into(current[n_add:], partner[n_add:], weights_a[n_add:], weights_b[n_add:], clip=True)
        for begin, end in ((0, ends[1]), (ends[3], ends[5])):  # (add, mult) x done after this round
            _copy_rows_(out, samples[begin:end], current[begin:end])
        if i + 1 < k and blocks[i + 1][-1]:
            position = torch.empty(n, dtype=torch.long, device=device)
            position[samples] = torch.arange(ends[-1], device=device)
            current = current.index_select(0, position[samples_by_round[i, :blocks[i + 1][-1]]])
