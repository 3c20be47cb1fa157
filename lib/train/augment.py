"""Training-time augmentations, batched on the device.

    from lib.train.augment import augment_batch
    x = augment_batch("saltpepper", x, generator, cfg)   # x: float [B,1,28,28] in [0,1]

`cfg` is the resolved config (mapping); each augmentation reads its own section
(`saltpepper`, `pixmix`). `mixing` is the resident PixMix mixing set (float [M,1,28,28]).
An extension file adds one by name (docs/extensions.md):

    register_augment("flip", lambda x, generator: x.flip(-1))
"""
import torch

from lib.config import RegistrationError, claim_name

AUGMENTS = ("none", "saltpepper", "pixmix")
# Augmentations registered by extension files: name -> function(x, generator) -> x.
AUGMENT_FUNCTIONS = {name: None for name in AUGMENTS}  # the built-ins: augment_batch below
# The MNIST-C corruptions each registered augmentation shows the model in training
# (the built-ins': lib.evaluate.robustness.OVERLAP); left out of its non-overlap mean.
AUGMENT_OVERLAPS = {}


def register_augment(name, function, overlaps=()):
    """Make `function(x, generator) -> augmented x` the augmentation `name`.

    x is a float batch [B, 1, 28, 28] in [0, 1] on the training device; draw any randomness
    from `generator` (a torch.Generator on that device), so that a seed gives the same model.
    `overlaps` names the MNIST-C corruptions (lib.data.mnist_c.CORRUPTIONS) it resembles.
    """
    from lib.data.mnist_c import CORRUPTIONS
    if not callable(function):
        raise RegistrationError(f"register_augment({name!r}): {function!r} is not a function")
    unknown = sorted(set(overlaps) - set(CORRUPTIONS))
    if isinstance(overlaps, str) or unknown:
        raise RegistrationError(f"register_augment({name!r}): overlaps={overlaps!r} must list MNIST-C "
                                f"corruptions (unknown: {', '.join(unknown) or overlaps}); "
                                f"known: {', '.join(CORRUPTIONS)}")
    claim_name("augment", name, [(AUGMENT_FUNCTIONS, function), (AUGMENT_OVERLAPS, frozenset(overlaps))])


def saltpepper_batch(x, generator, amount):
    """Replace a fraction `amount` of pixels, half by white (salt), half by black (pepper).

    Same rule as skimage.util.random_noise(mode="s&p", salt_vs_pepper=0.5), drawn per
    pixel, so each image gets about amount * 784 replaced pixels.
    """
    u = torch.rand(x.shape, generator=generator, device=x.device)
    out = x.clone()
    out[u < amount / 2] = 0.0
    out[(u >= amount / 2) & (u < amount)] = 1.0
    return out


def augment_batch(name, x, generator, cfg, mixing=None):
    if name == "none":
        return x
    if name == "saltpepper":
        return saltpepper_batch(x, generator, cfg["saltpepper"]["amount"])
    if name == "pixmix":
        from lib.train.pixmix import pixmix_batch
        p = cfg["pixmix"]
        return pixmix_batch(x, mixing, generator, k=p["k"], beta=p["beta"],
                            severity=p["severity"], all_ops=p["all_ops"])
    if AUGMENT_FUNCTIONS.get(name) is not None:
        out = AUGMENT_FUNCTIONS[name](x, generator)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape or not out.is_floating_point():
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"augmentation {name!r} returned {got} for a batch of shape {tuple(x.shape)}; it "
                             "must return a float tensor of the same shape")
        return out
    raise ValueError(f"unknown augment {name!r}; known: {', '.join(AUGMENT_FUNCTIONS)}")
