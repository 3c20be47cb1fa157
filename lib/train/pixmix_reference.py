"""PixMix one image at a time with PIL, literally as the reference (andyzoujm/pixmix).

    import numpy as np
    from lib.train.pixmix_reference import pixmix_reference_batch
    trace = {}
    mixed = pixmix_reference_batch(images, mixing, np.random.default_rng(0), trace=trace)
    # images uint8 [N,28,28], mixing uint8 [M,28,28] -> float32 [N,28,28] in [0, 1]
    trace["n_plain"], trace["op_counts"]

This is the yardstick for lib/train/pixmix.py: the tests compare the two in distribution
and the benchmark compares their speed. It keeps the reference's structure (PIL
operations on the uint8 picture, then float mixing), but draws from an explicit
numpy Generator and mixes with numpy instead of torch; numpy is the faster of the
two on single 28x28 pictures, so the speed comparison does not flatter the batched
version.
"""
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

def _int_parameter(level, maxval):
    return int(level * maxval / 10)


def _float_parameter(level, maxval):
    return float(level) * maxval / 10.0


def _sample_level(severity, rng):
    return rng.uniform(low=0.1, high=severity)


def _autocontrast(image, severity, rng):
    return ImageOps.autocontrast(image)


def _equalize(image, severity, rng):
    return ImageOps.equalize(image)


def _posterize(image, severity, rng):
    return ImageOps.posterize(image, 4 - _int_parameter(_sample_level(severity, rng), 4))


def _rotate(image, severity, rng):
    degrees = _int_parameter(_sample_level(severity, rng), 30)
    if rng.uniform() > 0.5:
        degrees = -degrees
    return image.rotate(degrees, resample=Image.BILINEAR)


def _solarize(image, severity, rng):
    return ImageOps.solarize(image, 256 - _int_parameter(_sample_level(severity, rng), 256))


def _affine(image, coefficients):
    return image.transform(image.size, Image.AFFINE, coefficients, resample=Image.BILINEAR)


def _shear_x(image, severity, rng):
    shear = _float_parameter(_sample_level(severity, rng), 0.3)
    if rng.uniform() > 0.5:
        shear = -shear
    return _affine(image, (1, shear, 0, 0, 1, 0))


def _shear_y(image, severity, rng):
    shear = _float_parameter(_sample_level(severity, rng), 0.3)
    if rng.uniform() > 0.5:
        shear = -shear
    return _affine(image, (1, 0, 0, shear, 1, 0))


def _translate_x(image, severity, rng):
    pixels = _int_parameter(_sample_level(severity, rng), image.size[0] / 3)
    if rng.random() > 0.5:
        pixels = -pixels
    return _affine(image, (1, 0, pixels, 0, 1, 0))


def _translate_y(image, severity, rng):
    pixels = _int_parameter(_sample_level(severity, rng), image.size[0] / 3)
    if rng.random() > 0.5:
        pixels = -pixels
    return _affine(image, (1, 0, 0, 0, 1, pixels))


def _enhance(enhancer):
    def apply(image, severity, rng):
        return enhancer(image).enhance(_float_parameter(_sample_level(severity, rng), 1.8) + 0.1)
    return apply


OPERATIONS = {
    "autocontrast": _autocontrast, "equalize": _equalize, "posterize": _posterize,
    "rotate": _rotate, "solarize": _solarize, "shear_x": _shear_x, "shear_y": _shear_y,
    "translate_x": _translate_x, "translate_y": _translate_y,
    "color": _enhance(ImageEnhance.Color), "contrast": _enhance(ImageEnhance.Contrast),
    "brightness": _enhance(ImageEnhance.Brightness), "sharpness": _enhance(ImageEnhance.Sharpness),
}
OPS = tuple(OPERATIONS)[:9]
ALL_OPS = tuple(OPERATIONS)


def _tensorize(image):
    return np.asarray(image, dtype=np.float32) / np.float32(255)


def _mixing_weights(beta, rng):
    if rng.random() < 0.5:
        a = np.float32(rng.beta(beta, 1))
        b = np.float32(rng.beta(1, beta))
    else:
        a = 1 + np.float32(rng.beta(1, beta))
        b = -np.float32(rng.beta(1, beta))
    return a, b


def _add(image1, image2, beta, rng):
    a, b = _mixing_weights(beta, rng)
    out = a * (image1 * 2 - 1) + b * (image2 * 2 - 1)
    return (out + 1) / 2


def _multiply(image1, image2, beta, rng):
    a, b = _mixing_weights(beta, rng)
    out = (image1 * 2) ** a * np.maximum(image2 * 2, np.float32(1e-37)) ** b
    return out / 2


MIXINGS = (_add, _multiply)


def augment_reference(image, rng, severity=3.0, all_ops=False, trace=None):
    """One operation drawn uniformly, applied to a PIL image; counts it in trace."""
    names = ALL_OPS if all_ops else OPS
    name = names[rng.integers(len(names))]
    if trace is not None:
        trace["op_counts"][name] = trace["op_counts"].get(name, 0) + 1
    return OPERATIONS[name](image.copy(), severity, rng)


def pixmix_reference(image, mixing_picture, rng, k=4, beta=3.0, severity=3.0, all_ops=False,
                     trace=None):
    """PixMix one uint8 [H,W] picture with one uint8 [H,W] mixing picture -> float32 [H,W]."""
    original = Image.fromarray(image)
    augmented = rng.random() < 0.5
    mixed = _tensorize(augment_reference(original, rng, severity, all_ops, trace)
                       if augmented else original)
    rounds = rng.integers(k + 1)
    if trace is not None:
        trace["n_samples"] += 1
        trace["n_plain"] += int(not augmented and rounds == 0)
    for _ in range(rounds):
        partner_kind = "augmented" if rng.random() < 0.5 else "mixing"
        if partner_kind == "augmented":
            partner = _tensorize(augment_reference(original, rng, severity, all_ops, trace))
        else:
            partner = _tensorize(mixing_picture)
        mix = MIXINGS[rng.integers(len(MIXINGS))]
        if trace is not None:
            trace["partner_counts"][partner_kind] += 1
            trace["mix_counts"][mix.__name__.lstrip("_")] += 1
        mixed = np.clip(mix(mixed, partner, beta, rng), 0, 1)
    return mixed


def pixmix_reference_batch(images, mixing, rng, k=4, beta=3.0, severity=3.0, all_ops=False,
                           trace=None):
    """Loop pixmix_reference over uint8 images [N,H,W], one mixing picture drawn per image.

    If trace is a dict, it is filled with n_samples, n_plain, op_counts {name: count},
    mix_counts {"add", "multiply"} and partner_counts {"augmented", "mixing"}.
    """
    if trace is not None:
        trace.update(n_samples=0, n_plain=0, mix_counts={"add": 0, "multiply": 0},
                     partner_counts={"augmented": 0, "mixing": 0},
                     op_counts={name: 0 for name in (ALL_OPS if all_ops else OPS)})
    out = np.empty(images.shape, dtype=np.float32)
    for i, image in enumerate(images):
        picture = mixing[rng.integers(len(mixing))]
        out[i] = pixmix_reference(image, picture, rng, k, beta, severity, all_ops, trace)
    return out
