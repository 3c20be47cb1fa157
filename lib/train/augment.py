"""Training-time augmentations, batched on the device.

    from lib.train.augment import augment_batch
    x = augment_batch("saltpepper", x, generator, cfg)   # x: float [B,1,28,28] in [0,1]

`cfg` is the resolved config (mapping); each augmentation reads its own section
(`saltpepper`, `pixmix`). `mixing` is the resident PixMix mixing set (float [M,1,28,28]).
"""
import torch

AUGMENTS = ("none", "saltpepper", "pixmix")


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
    raise ValueError(f"unknown augment {name!r}; known: {', '.join(AUGMENTS)}")
