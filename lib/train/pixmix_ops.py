"""PixMix's image operations (the reference's `aug`), batched, with PIL's 8-bit results.

    import torch
    from lib.train import pixmix_ops
    out = pixmix_ops.rotate(x, 12)                      # x float [n,1,H,W] in [0, 1]; one value or one per sample
    out = pixmix_ops.posterize(x, torch.tensor([3, 4])) # bits per sample
    out, op_ids, magnitude = pixmix_ops.augment_batch(x, torch.Generator().manual_seed(0))
    pixmix_ops.ALL_OPS[op_ids[0]]                       # the operation drawn for sample 0

    # what pixmix_batch calls: aug(x[sample_index[r]]) for every request r
    augmented, order = pixmix_ops.augment_requests(x, sample_index, op_ids, magnitude, severity)

The operations work like PIL on 8-bit images, because the reference applies them to PIL
images: the point operations (autocontrast, equalize, color, contrast, brightness) are
per-sample 256-entry lookup tables built with PIL's integer arithmetic, posterize and
solarize the same integer arithmetic on the floats; the geometric ones are inverse affine
maps in PIL's pixel convention sampled bilinearly with zero fill (rotate with grid_sample,
or, for the whole-degree angles the augmentation draws, with bilinear taps computed once
per angle; shears and translations move each row or column by its own amount, a 1-D
interpolation that is cheaper and gives the same values); every augmented picture is
rounded to the 1/255 grid, as the reference's uint8 PIL image is. At the border PIL's
bilinear filter extends the edge pixel where grid_sample blends with black; MNIST borders
are black. `color` is the identity here: PIL's Color enhancement blends an image with its
own greyscale version, which for a grey image is the image itself. It still counts as a
drawn operation, as in the reference.

The level scheme is the reference's: level ~ U(0.1, severity), scaled per operation
(op_magnitudes), the sign of rotations, shears and translations flipped with probability
1/2. lib/train/pixmix_reference.py applies the same operations with PIL; the tests
compare the two operation by operation.
"""
import functools
import math

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
# the order augment_requests processes the ops in, each op's requests one contiguous
# slice: the table ops come first and side by side, as one gather serves all five; the
# order of the rest is free
_GROUP_ORDER = _LUT_OPS + ("posterize", "solarize", "rotate", "shear_x", "translate_x", "shear_y",
                           "translate_y", "sharpness")
# ops whose requests are further sorted by their whole-number magnitude (translations in
# pixels, rotations in degrees): one slice copy per distance, one set of taps per angle
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


# taps kept for this many angles: the level scheme draws at most 2 int(3 severity) + 1
# whole-degree angles, 61 at the config schema's largest severity, 10
_CACHED_ANGLES = 256


@functools.lru_cache(maxsize=_CACHED_ANGLES)
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
    """A pad above every shift the level scheme can draw at this severity: a shear of at
    most 0.3 level/10 moves a line by up to that times the number of lines, a translation
    moves by up to width/3 level/10 (the scales of _magnitude_rules)."""
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
    return _move_lines(x, shear, is_shear=True, columns=False)


def shear_y(x, shear):
    """PIL transform (1, 0, 0, s, 1, 0): input y = s x + y."""
    return _move_lines(x, shear, is_shear=True, columns=True)


def translate_x(x, pixels):
    """PIL transform (1, 0, t, 0, 1, 0): input x = x + t, so the picture moves by -t."""
    return _move_lines(x, pixels, is_shear=False, columns=False)


def translate_y(x, pixels):
    return _move_lines(x, pixels, is_shear=False, columns=True)


def _move_lines(x, amount, is_shear, columns):
    """Shear or translate every row of x (every column with `columns`) by `amount`."""
    amount = _per_sample_value(amount, x)
    lines = x.transpose(-1, -2) if columns else x
    shifts = _line_shifts(amount, torch.full_like(amount, is_shear, dtype=torch.bool), lines.shape[-2])
    moved = _shift_lines(lines, shifts)
    return moved.transpose(-1, -2) if columns else moved


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
# picture's own levels in augment_requests)
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
    level, negate = level_and_sign(torch.rand(shape, generator=generator, device=device),
                                    torch.rand(shape, generator=generator, device=device), severity)
    return op_ids, op_magnitudes(op_ids, level, negate, image_size)


def level_and_sign(u_level, u_sign, severity):
    """The reference's level ~ U(0.1, severity) and sign flip (probability 1/2) from uniforms."""
    return u_level.mul(severity - 0.1).add_(0.1), u_sign > 0.5


def _sort_requests(op_ids, magnitude, largest_amount):
    """The order augment_requests processes its requests in, and where each op's rows lie.

    Requests sort by their op's place in _GROUP_ORDER, those of a binned op further by
    their whole amount (-largest_amount..largest_amount, one bin each; the caller's bound
    lies above every amount the level scheme draws). Returns (order, spans, bins):
    request order[j] is processed in row j; rows spans[name] = (first, last) hold one op;
    bins[name] lists (amount, first, last) for each amount a binned op drew.
    """
    bins_per_op = 2 * largest_amount + 1
    rank, binned = _op_tables(op_ids.device)
    amount = torch.where(binned[op_ids], magnitude.round().long().clamp(-largest_amount, largest_amount), 0)
    # one sort key, whole numbers from 0: (rank of the op, amount + largest_amount); the
    # unbinned ops all fall in their amount-0 bin
    key = rank[op_ids] * bins_per_op + amount + largest_amount
    order = torch.argsort(key, stable=True)
    ends = torch.bincount(key, minlength=len(_GROUP_ORDER) * bins_per_op).cumsum(0).tolist()
    starts = [0] + ends[:-1]
    spans, bins = {}, {}
    for op_rank, name in enumerate(_GROUP_ORDER):
        first_bin, last_bin = op_rank * bins_per_op, (op_rank + 1) * bins_per_op - 1
        spans[name] = (starts[first_bin], ends[last_bin])
        if name in _BINNED_OPS:
            bins[name] = [(b - first_bin - largest_amount, starts[b], ends[b])
                          for b in range(first_bin, last_bin + 1) if ends[b] > starts[b]]
    return order, spans, bins


def augment_requests(x, sample_index, op_ids, magnitude, severity):
    """aug(x[sample_index[r]]) for every request r, with its drawn op and magnitude.

    Returns (augmented pictures in processing order, order): augmented[j] belongs to
    request order[j]. Requests are sorted by op so that every op works on a contiguous
    slice: one gather in, no scatter out. Translations are further sorted by their
    (whole-pixel) distance and rotations by their (whole-degree) angle: each distance is
    one slice copy, exact on 8-bit pictures, and each angle reuses one set of
    interpolation taps.
    """
    device = x.device
    pad = _shift_pad(severity, x.shape)
    order, span, bins = _sort_requests(op_ids, magnitude, max(pad, _max_rotation(severity)))

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
        for degrees, first, last in bins["rotate"]:
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
        for distance, a, b in bins[translate]:
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
    augmented, order = augment_requests(x, everyone, op_ids, magnitude, severity)
    return torch.empty_like(augmented).index_copy_(0, order, augmented), op_ids, magnitude


