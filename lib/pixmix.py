"""PixMix (Hendrycks et al., 2022) batched over a whole batch on the device.

    import torch
    from lib.pixmix import pixmix_batch
    g = torch.Generator(device=x.device).manual_seed(0)
    mixed = pixmix_batch(x, mixing, g)                 # x [B,1,28,28], mixing [M,1,28,28], both in [0, 1]
    mixed, trace = pixmix_batch(x, mixing, g, return_trace=True)
    trace["n_plain"], trace["op_counts"]               # samples left as plain x; how often each op ran

The algorithm follows the reference implementation (andyzoujm/pixmix) step by step;
lib/pixmix_reference.py is the literal one-image-at-a-time version with PIL. Every
random choice (operation, level, sign, number of rounds, partner, mixing operation,
weights, mixing picture) is drawn per sample as a tensor from `generator`; the only
Python loops run over the k rounds and over the small fixed groups of operations.

Image operations work like PIL on 8-bit images, because the reference applies them
to PIL images: the point operations (autocontrast, equalize, posterize, solarize,
color, contrast, brightness) are per-sample 256-entry lookup tables built with PIL's
integer arithmetic; the geometric ones (rotate, shear, translate) are inverse affine
maps in PIL's pixel convention, sampled bilinearly with one grid_sample call; every
augmented picture is rounded to the 1/255 grid, as the reference's uint8 PIL image is.
`color` is the identity here: PIL's Color enhancement blends an image with its own
greyscale version, which for a grey image is the image itself. It still counts as a
drawn operation, as in the reference.
"""
import math

import torch
import torch.nn.functional as F

IMAGE_SIZE = 28

OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize",
       "shear_x", "shear_y", "translate_x", "translate_y")
ALL_OPS = OPS + ("color", "contrast", "brightness", "sharpness")

_POINT_OPS = ("autocontrast", "equalize", "posterize", "solarize", "color", "contrast", "brightness")
_GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_SIGNED_OPS = _GEOMETRIC_OPS  # the reference flips the sign of these with probability 1/2


# ---------------------------------------------------------------- 8-bit helpers

def _to_levels(x):
    """[n,1,H,W] floats in [0,1] -> int64 grey levels 0..255, flattened to [n, H*W]."""
    return (x * 255).round().clamp(0, 255).long().flatten(1)


def _apply_lut(x, lut):
    """Map each sample's grey levels through its own 256-entry table lut [n,256]."""
    out = lut.gather(1, _to_levels(x))
    return out.to(x.dtype).div(255).view_as(x)


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


def _autocontrast_lut(levels):
    # PIL (cutoff 0) stretches [lo, hi] to [0, 255] with int(i*scale + offset) in double
    # precision; doing the same in float64 gives PIL's table exactly.
    lo = levels.amin(1).double()[:, None]
    hi = levels.amax(1).double()[:, None]
    i = torch.arange(256, device=levels.device, dtype=torch.float64)
    span = (hi - lo).clamp_min(1)
    scale = 255.0 / span
    offset = -lo * scale
    lut = (i * scale + offset).clamp(0, 255).floor().long()
    return torch.where(hi > lo, lut, i.long().expand_as(lut))


def _equalize_lut(levels):
    n, pixels = levels.shape
    histogram = torch.zeros(n, 256, dtype=torch.long, device=levels.device)
    histogram.scatter_add_(1, levels, torch.ones_like(levels))
    count_at_max = histogram.gather(1, levels.amax(1, keepdim=True))
    # PIL: step = (pixels - count of the brightest level present) // 255; the table
    # starts at step // 2 and climbs by the histogram, integer-divided by step.
    step = (pixels - count_at_max) // 255
    below = histogram.cumsum(1) - histogram
    safe_step = step.clamp_min(1)
    lut = ((safe_step // 2 + below) // safe_step).clamp(0, 255)
    return torch.where(step > 0, lut, _identity_lut(n, levels.device))


def _posterize_lut(bits, device):
    keep_mask = (255 << (8 - bits.long())) & 255
    return torch.arange(256, device=device)[None, :] & keep_mask[:, None]


def _solarize_lut(threshold, device):
    i = torch.arange(256, device=device)[None, :]
    return torch.where(i >= threshold.long()[:, None], 255 - i, i)


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
    transform and in affine_grid with align_corners=False. Outside pixels are 0 (black).
    """
    n, _, h, w = x.shape
    # normalised u = 2 p / size - 1  =>  input_u = A u + (A 1 + 2 t / size - 1)
    size = torch.tensor([w, h], dtype=x.dtype, device=x.device)
    half = size / 2
    a = matrix * half[None, None, :] / half[None, :, None]  # rescale for non-square images
    b = (matrix @ half + shift) / half - 1
    theta = torch.cat([a, b[:, :, None]], dim=2)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _geometric_maps(op_names, magnitude, size_hw):
    """Inverse maps for geometric ops, one per sample: op_names indexes _GEOMETRIC_OPS."""
    n = magnitude.shape[0]
    device, dtype = magnitude.device, torch.float32
    magnitude = magnitude.to(dtype)
    matrix = torch.eye(2, dtype=dtype, device=device).repeat(n, 1, 1)
    shift = torch.zeros(n, 2, dtype=dtype, device=device)
    is_op = {name: op_names == i for i, name in enumerate(_GEOMETRIC_OPS)}

    # PIL rotate(deg): inverse map about the centre with phi = -radians(deg)
    phi = torch.where(is_op["rotate"], -magnitude * (math.pi / 180), torch.zeros_like(magnitude))
    cos, sin = torch.cos(phi), torch.sin(phi)
    rotation = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
    centre = torch.tensor([size_hw[1] / 2, size_hw[0] / 2], dtype=dtype, device=device)
    matrix = torch.where(is_op["rotate"][:, None, None], rotation, matrix)
    shift = torch.where(is_op["rotate"][:, None], centre - rotation @ centre, shift)

    # PIL transform (1, s, 0, 0, 1, 0) and (1, 0, 0, s, 1, 0): shear about the top-left corner
    matrix[:, 0, 1] = torch.where(is_op["shear_x"], magnitude, matrix[:, 0, 1])
    matrix[:, 1, 0] = torch.where(is_op["shear_y"], magnitude, matrix[:, 1, 0])
    # PIL transform (1, 0, t, 0, 1, 0): the picture moves by -t
    shift[:, 0] = torch.where(is_op["translate_x"], magnitude, shift[:, 0])
    shift[:, 1] = torch.where(is_op["translate_y"], magnitude, shift[:, 1])
    return matrix, shift


def _geometric(x, op_name, magnitude):
    magnitude = torch.as_tensor(magnitude, dtype=torch.float32, device=x.device).expand(x.shape[0])
    op_ids = torch.full_like(magnitude, _GEOMETRIC_OPS.index(op_name), dtype=torch.long)
    return _affine(x, *_geometric_maps(op_ids, magnitude, x.shape[-2:]))


# ---------------------------------------------------------------- public per-op functions
# x: float [n,1,H,W] in [0,1]; magnitudes: a number or one value per sample, in the
# units PIL's call takes (degrees, shear factor, pixels, bits, 0..256 threshold, factor).

def autocontrast(x):
    return _apply_lut(x, _autocontrast_lut(_to_levels(x)))


def equalize(x):
    return _apply_lut(x, _equalize_lut(_to_levels(x)))


def posterize(x, bits):
    bits = torch.as_tensor(bits, device=x.device).expand(x.shape[0])
    return _apply_lut(x, _posterize_lut(bits, x.device))


def solarize(x, threshold):
    threshold = torch.as_tensor(threshold, device=x.device).expand(x.shape[0])
    return _apply_lut(x, _solarize_lut(threshold, x.device))


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
    return _geometric(x, "rotate", degrees)


def shear_x(x, shear):
    return _geometric(x, "shear_x", shear)


def shear_y(x, shear):
    return _geometric(x, "shear_y", shear)


def translate_x(x, pixels):
    return _geometric(x, "translate_x", pixels)


def translate_y(x, pixels):
    return _geometric(x, "translate_y", pixels)


# ---------------------------------------------------------------- the random augmentation

def op_magnitudes(op_names, level, negate, image_size=IMAGE_SIZE):
    """The reference's level scheme, vectorised: level ~ U(0.1, severity) per sample.

    Returns the magnitude in each op's own unit (see the per-op functions). int() in
    the reference truncates; levels are positive, so floor is the same.
    """
    tenth = level / 10
    magnitude = torch.zeros_like(level)
    table = {
        "posterize": 4 - torch.floor(tenth * 4),
        "rotate": torch.floor(tenth * 30),
        "solarize": 256 - torch.floor(tenth * 256),
        "shear_x": tenth * 0.3,
        "shear_y": tenth * 0.3,
        "translate_x": torch.floor(tenth * (image_size / 3)),
        "translate_y": torch.floor(tenth * (image_size / 3)),
        "color": tenth * 1.8 + 0.1,
        "contrast": tenth * 1.8 + 0.1,
        "brightness": tenth * 1.8 + 0.1,
        "sharpness": tenth * 1.8 + 0.1,
    }
    for i, name in enumerate(ALL_OPS):
        if name in table:
            magnitude = torch.where(op_names == i, table[name], magnitude)
    signed = torch.zeros_like(negate)
    for name in _SIGNED_OPS:
        signed |= op_names == ALL_OPS.index(name)
    return torch.where(signed & negate, -magnitude, magnitude)


def augment_batch(x, generator, severity=3.0, all_ops=False):
    """One randomly drawn operation per sample, as the reference's augment_input.

    Returns (augmented images on the 1/255 grid, op index per sample into ALL_OPS).
    """
    n = x.shape[0]
    device = x.device
    n_ops = len(ALL_OPS) if all_ops else len(OPS)
    op_ids = torch.randint(0, n_ops, (n,), generator=generator, device=device)
    level = 0.1 + (severity - 0.1) * torch.rand(n, generator=generator, device=device)
    negate = torch.rand(n, generator=generator, device=device) > 0.5
    magnitude = op_magnitudes(op_ids, level, negate, x.shape[-1])
    out = torch.empty_like(x)

    point = torch.zeros(n, dtype=torch.bool, device=device)
    for name in _POINT_OPS:
        point |= op_ids == ALL_OPS.index(name)
    index = point.nonzero().squeeze(1)
    if index.numel():
        levels = _to_levels(x[index])
        ops, mag = op_ids[index], magnitude[index]
        lut = _identity_lut(index.numel(), device)

        def use(name, table):
            nonlocal lut
            lut = torch.where((ops == ALL_OPS.index(name))[:, None], table, lut)

        use("autocontrast", _autocontrast_lut(levels))
        use("equalize", _equalize_lut(levels))
        use("posterize", _posterize_lut(mag.clamp(0, 8), device))
        use("solarize", _solarize_lut(mag, device))
        if all_ops:
            use("contrast", _contrast_lut(levels, mag))
            use("brightness", _brightness_lut(mag))
        out[index] = lut.gather(1, levels).to(x.dtype).div(255).view(-1, *x.shape[1:])

    # position of each op in _GEOMETRIC_OPS, -1 for the others
    to_geometric = torch.tensor([_GEOMETRIC_OPS.index(name) if name in _GEOMETRIC_OPS else -1
                                 for name in ALL_OPS], device=device)
    geometric_ids = to_geometric[op_ids]
    index = (geometric_ids >= 0).nonzero().squeeze(1)
    if index.numel():
        maps = _geometric_maps(geometric_ids[index], magnitude[index], x.shape[-2:])
        out[index] = (_affine(x[index], *maps) * 255).round() / 255

    index = (op_ids == ALL_OPS.index("sharpness")).nonzero().squeeze(1)
    if index.numel():
        out[index] = sharpness(x[index], magnitude[index])
    return out, op_ids


# ---------------------------------------------------------------- mixing

def _per_sample(value, like):
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.view(-1, *([1] * (like.dim() - 1))) if value.dim() == 1 else value


def mix_add(x1, x2, a, b):
    """The reference's additive mixing: in [-1, 1], a*x1 + b*x2, back to [0, 1] (unclipped)."""
    a, b = _per_sample(a, x1), _per_sample(b, x1)
    return (a * (2 * x1 - 1) + b * (2 * x2 - 1) + 1) / 2


def mix_multiply(x1, x2, a, b):
    """The reference's geometric mixing: in [0, 2], x1^a * max(x2, 1e-37)^b, halved (unclipped)."""
    a, b = _per_sample(a, x1), _per_sample(b, x1)
    return (2 * x1).pow(a) * (2 * x2).clamp_min(1e-37).pow(b) / 2


def _mixing_weights(shape, beta, generator, device):
    """Per-sample (a, b) of the reference's get_ab by inverse-CDF sampling.

    U^(1/beta) ~ Beta(beta, 1) and 1 - U^(1/beta) ~ Beta(1, beta); half the time
    a ~ Beta(beta, 1), b ~ Beta(1, beta), else a = 1 + Beta(1, beta), b = -Beta(1, beta).
    """
    first_kind = torch.rand(shape, generator=generator, device=device) < 0.5
    root_a = torch.rand(shape, generator=generator, device=device).pow(1 / beta)
    beta_b = 1 - torch.rand(shape, generator=generator, device=device).pow(1 / beta)
    a = torch.where(first_kind, root_a, 2 - root_a)
    b = torch.where(first_kind, beta_b, -beta_b)
    return a, b


def pixmix_batch(x, mixing, generator, k=4, beta=3.0, severity=3.0, all_ops=False,
                 return_trace=False):
    """PixMix every sample of x with one mixing picture drawn per sample.

    x [B,1,H,W] and mixing [M,1,H,W]: floats in [0, 1] on generator's device.
    Returns the mixed batch (same shape and dtype, values in [0, 1]); with
    return_trace also {"n_samples", "n_plain", "op_counts": {op name: count}}.
    """
    if x.dim() != 4 or mixing.dim() != 4 or x.shape[1:] != mixing.shape[1:]:
        raise ValueError(f"pixmix_batch needs x [B,1,H,W] and mixing [M,1,H,W] of the same "
                         f"picture size; got {tuple(x.shape)} and {tuple(mixing.shape)}")
    n, device = x.shape[0], x.device

    def uniform(*shape):
        return torch.rand(shape, generator=generator, device=device)

    picks = torch.randint(0, mixing.shape[0], (n,), generator=generator, device=device)
    start_augmented = uniform(n) < 0.5
    rounds = torch.randint(0, k + 1, (n,), generator=generator, device=device)
    partner_augmented = uniform(k, n) < 0.5
    use_multiply = uniform(k, n) < 0.5
    a, b = _mixing_weights((k, n), beta, generator, device)

    # slot 0 is the starting picture, slot i+1 the partner of round i; every picture that
    # is aug(x) is augmented independently, so all of them go through one augment call.
    active = torch.arange(k, device=device)[:, None] < rounds[None, :]
    wants_aug = torch.cat([start_augmented[None], partner_augmented & active])
    slot_index, sample_index = wants_aug.nonzero(as_tuple=True)
    augmented, op_ids = augment_batch(x[sample_index], generator, severity, all_ops)
    slots = torch.empty((k + 1,) + tuple(x.shape), dtype=x.dtype, device=device)
    slots[0] = x
    slots[1:] = mixing[picks]
    slots[slot_index, sample_index] = augmented

    mixed = slots[0]
    for i in range(k):
        for multiply in (False, True):
            index = (active[i] & (use_multiply[i] == multiply)).nonzero().squeeze(1)
            if not index.numel():
                continue
            mix = mix_multiply if multiply else mix_add
            mixed[index] = mix(mixed[index], slots[i + 1, index], a[i, index], b[i, index]).clamp(0, 1)

    if not return_trace:
        return mixed
    n_ops = len(ALL_OPS) if all_ops else len(OPS)
    counts = torch.bincount(op_ids, minlength=n_ops).tolist()
    trace = {"n_samples": n,
             "n_plain": int((~start_augmented & (rounds == 0)).sum()),
             "op_counts": dict(zip(ALL_OPS[:n_ops], counts))}
    return mixed, trace
