"""Readers for the raw data formats and the conversion to MNIST's frame (28x28 grey, white on black).

    from lib.data.formats import read_idx, load_cifar_batch, mnist_frame
    x = read_idx("data/MNIST/raw/t10k-images-idx3-ubyte.gz", ndim=3)    # uint8 [N, 28, 28]
    y = read_idx("data/MNIST/raw/t10k-labels-idx1-ubyte.gz", ndim=1)
    rgb, labels = load_cifar_batch(raw_bytes, "cifar-10-batches-py/test_batch")
    grey28 = mnist_frame(luminance(rgb), polarity="auto")               # uint8 [N, 28, 28]

Parsers raise CorruptFileError naming the file, what is wrong and the fix.
"""
import gzip
import io
import pickle
import zlib

import numpy as np

from lib.data.download import CorruptFileError

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
IDX_UBYTE = 0x08
REFETCH = "Delete it and rerun the fetch (or stage a good copy by hand under data_dir)."


def maybe_gunzip(raw, name):
    """raw bytes, decompressed when they start with the gzip magic (1f 8b)."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise CorruptFileError(f"{name}: not a valid gzip file ({e}); it is truncated or damaged. "
                               f"{REFETCH}") from e


def parse_idx(raw, name, ndim):
    """An IDX (MNIST format) uint8 array with ndim dimensions from raw bytes (gzip or not)."""
    data = maybe_gunzip(raw, name)
    header = 4 + 4 * ndim
    expected_magic = IDX_UBYTE << 8 | ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != expected_magic:
        shown = "missing" if magic is None else f"0x{magic:08x}"
        raise CorruptFileError(
            f"{name}: wrong IDX magic number {shown}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}); this is not an "
            f"MNIST-format {'image' if ndim == 3 else 'label'} file. {REFETCH}")
    if len(data) < header:
        raise CorruptFileError(f"{name}: IDX header cut short ({len(data)} bytes). {REFETCH}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise CorruptFileError(f"{name}: IDX header announces shape {shape} ({count} bytes) but "
                               f"{len(data) - header} bytes follow; the file is truncated or "
                               f"damaged. {REFETCH}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_idx(path, ndim):
    with open(path, "rb") as f:
        return parse_idx(f.read(), str(path), ndim)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles; unpickling may call any importable function, so only
    the few that rebuild numpy arrays and byte strings are allowed."""

    ALLOWED = {(m, f) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
               for f in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype"),
                                                       ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def load_cifar_batch(raw, name):
    """(images uint8 [N, 32, 32, 3], labels int64 [N]) from one CIFAR-10 python batch."""
    try:
        batch = _ArraysOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
        data = batch.get("data", batch.get(b"data"))
        labels = batch.get("labels", batch.get(b"labels"))
        images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(labels, dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as e:
        raise CorruptFileError(f"{name}: not a readable CIFAR-10 python batch ({e}). {REFETCH}") from e
    if len(images) != len(labels):
        raise CorruptFileError(f"{name}: {len(images)} images but {len(labels)} labels. {REFETCH}")
    return np.ascontiguousarray(images), labels


def luminance(rgb):
    """Grey level of uint8 RGB [..., 3] with ITU-R BT.601 weights (PIL's 'L'), float32 0..255."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return rgb.astype(np.float32) @ weights


def resize_to_28(images, chunk=8192):
    """uint8 [N, 28, 28] from grey images [N, H, W] (any size), antialiased bilinear."""
    import torch
    import torch.nn.functional as F
    images = np.asarray(images)
    if images.shape[1:] == (28, 28):
        return np.clip(np.round(images), 0, 255).astype(np.uint8)
    out = np.empty((len(images), 28, 28), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        block = torch.from_numpy(np.asarray(images[start:start + chunk], dtype=np.float32))
        small = F.interpolate(block[:, None], size=(28, 28), mode="bilinear", antialias=True,
                              align_corners=False)[:, 0]
        out[start:start + chunk] = small.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def border_mean(images, width=2):
    """Mean grey level of each image's outer ring of `width` pixels, [N] float."""
    ring = np.ones(images.shape[1:], dtype=bool)
    ring[width:-width, width:-width] = False
    return images[:, ring].mean(axis=1)


def white_on_black(images, polarity):
    """uint8 images with MNIST's polarity: 'keep' as is, 'invert' all, or 'auto':
    invert each image whose border (its background) is light, i.e. dark-on-light."""
    if polarity == "keep":
        return images
    if polarity == "invert":
        return 255 - images
    if polarity == "auto":
        flip = border_mean(images) > 127.5
        out = images.copy()
        out[flip] = 255 - out[flip]
        return out
    raise ValueError(f"polarity must be 'keep', 'invert' or 'auto', not {polarity!r}")


def mnist_frame(grey, polarity):
    """Grey images [N, H, W] -> uint8 [N, 28, 28], white on black per `polarity`."""
    return white_on_black(resize_to_28(grey), polarity)
