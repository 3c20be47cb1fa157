"""Readers of the raw data formats, and how each real set's files become MNIST-like arrays.

    from lib.data.readers import READERS, read_idx, load_cifar_batch, luminance, mnist_frame
    x = read_idx("data/MNIST/raw/t10k-images-idx3-ubyte.gz", ndim=3)    # uint8 [N, 28, 28]
    y = read_idx("data/MNIST/raw/t10k-labels-idx1-ubyte.gz", ndim=1)
    rgb, labels = load_cifar_batch(raw_bytes, "cifar-10-batches-py/test_batch")
    grey28 = mnist_frame(luminance(rgb), polarity="auto")               # uint8 [N, 28, 28]
    arrays = READERS["omniglot"]({"zip": path}, spec, count=None, seed=0)   # {"x_test", "y_test"}

The format parsers (IDX, CIFAR batches) and the conversion to MNIST's frame (28x28 grey,
white on black) come first, then one reader per set's files.
A reader gets the verified paths of a set's files (keys as in lib.data.real's registry),
the set's spec (splits, polarity), and an optional seeded subset size; it returns uint8
[N, 28, 28] white-on-black images and int64 labels per split. Everything raises
CorruptFileError naming the file, what is wrong and the fix when the content is not what
the format promises.
"""
import gzip
import io
import pickle
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

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


def pick_subset(n, count, seed):
    """Indices of a seeded random subset of `count` items (in original order), or all."""
    if count is None or count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))


def _read_idx_splits(paths, spec, count, seed):
    out = {}
    for split in spec["splits"]:
        x = read_idx(paths[f"{split}_images"], 3)
        y = read_idx(paths[f"{split}_labels"], 1).astype(np.int64)
        if len(x) != len(y) or x.shape[1:] != (28, 28):
            raise CorruptFileError(f"{paths[f'{split}_images']}: {x.shape} images for {len(y)} labels "
                                   f"({paths[f'{split}_labels']}); expected N x 28 x 28 and N labels. {REFETCH}")
        keep = pick_subset(len(x), count, seed)
        out[f"x_{split}"], out[f"y_{split}"] = x[keep], y[keep]
    return out


def _open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CorruptFileError(f"{path}: not a readable zip archive ({e}); truncated or damaged. "
                               f"{REFETCH}") from e


def _zip_member(archive, member, path):
    try:
        return archive.read(member)
    except KeyError as e:
        raise CorruptFileError(f"{path}: archive has no member {member}; wrong file. {REFETCH}") from e
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise CorruptFileError(f"{path}: member {member} is damaged ({e}). {REFETCH}") from e


def _read_emnist_letters(paths, spec, count, seed):
    out = {}
    with _open_zip(paths["zip"]) as archive:
        for split in spec["splits"]:
            names = {k: f"gzip/emnist-letters-{split}-{k}-ubyte.gz" for k in ("images-idx3", "labels-idx1")}
            x = parse_idx(_zip_member(archive, names["images-idx3"], paths["zip"]),
                          f"{paths['zip']}:{names['images-idx3']}", 3)
            y = parse_idx(_zip_member(archive, names["labels-idx1"], paths["zip"]),
                          f"{paths['zip']}:{names['labels-idx1']}", 1).astype(np.int64)
            keep = pick_subset(len(x), count, seed)
            # EMNIST stores each image transposed relative to MNIST.
            out[f"x_{split}"] = np.ascontiguousarray(x[keep].transpose(0, 2, 1))
            out[f"y_{split}"] = y[keep]
    return out


def _decode_png(raw, name):
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(raw)) as img:
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptFileError(f"{name}: unreadable PNG ({e})") from e


def _read_omniglot(paths, spec, count, seed):
    path = paths["zip"]
    with _open_zip(path) as archive:
        pngs = sorted(n for n in archive.namelist() if n.endswith(".png"))
        # images_evaluation/<alphabet>/<character>/<drawing>.png; one class per character.
        characters = sorted({tuple(n.split("/")[1:3]) for n in pngs})
        label_of = {c: i for i, c in enumerate(characters)}
        keep = pick_subset(len(pngs), count, seed)
        images = [_decode_png(_zip_member(archive, pngs[i], path), f"{path}:{pngs[i]}") for i in keep]
        labels = np.array([label_of[tuple(pngs[i].split("/")[1:3])] for i in keep], dtype=np.int64)
    if not images:
        raise CorruptFileError(f"{path}: no PNG images inside. {REFETCH}")
    try:
        stack = np.stack(images)
    except ValueError as e:
        raise CorruptFileError(f"{path}: images differ in size ({e}). {REFETCH}") from e
    return {"x_test": mnist_frame(stack, spec["polarity"]), "y_test": labels}


def _read_cifar(paths, spec, count, seed):
    path = paths["archive"]
    member = "cifar-10-batches-py/test_batch"
    if str(path).endswith(".tar.gz"):
        try:
            with tarfile.open(path, "r:gz") as archive:
                raw = archive.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError, KeyError, AttributeError) as e:
            raise CorruptFileError(f"{path}: cannot read {member} ({type(e).__name__}: {e}); the archive "
                                   f"is truncated or damaged. {REFETCH}") from e
    else:
        raw = Path(path).read_bytes()
    rgb, labels = load_cifar_batch(raw, f"{path}:{member}")
    keep = pick_subset(len(rgb), count, seed)
    return {"x_test": mnist_frame(luminance(rgb[keep]), spec["polarity"]), "y_test": labels[keep]}


def _read_notmnist(paths, spec, count, seed):
    path = paths["archive"]
    images, labels, unreadable = [], [], []
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile() and m.name.endswith(".png")),
                             key=lambda m: m.name)
            keep = set(pick_subset(len(members), count, seed).tolist())
            for i, m in enumerate(members):
                if i not in keep:
                    continue
                letter = m.name.split("/")[-2]
                try:
                    img = _decode_png(archive.extractfile(m).read(), m.name)
                except CorruptFileError:
                    unreadable.append(m.name)  # the archive ships a few empty PNGs
                    continue
                if img.shape != (28, 28) or not ("A" <= letter <= "J"):
                    unreadable.append(m.name)
                    continue
                images.append(img)
                labels.append(ord(letter) - ord("A"))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CorruptFileError(f"{path}: not a readable tar.gz ({type(e).__name__}: {e}); truncated or "
                               f"damaged. {REFETCH}") from e
    if unreadable:
        print(f"notmnist: skipped {len(unreadable)} unreadable image(s), e.g. {unreadable[0]}", file=sys.stderr)
    if not images:
        raise CorruptFileError(f"{path}: no readable 28x28 letter images A-J inside. {REFETCH}")
    return {"x_test": mnist_frame(np.stack(images), spec["polarity"]),
            "y_test": np.array(labels, dtype=np.int64)}


def _read_tiny300k(paths, spec, count, seed, chunk=10000):
    path = paths["array"]
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptFileError(f"{path}: not a readable .npy array ({e}); a truncated download looks "
                               f"like this. {REFETCH}") from e
    if array.ndim != 4 or array.shape[1:] != (32, 32, 3) or array.dtype != np.uint8:
        raise CorruptFileError(f"{path}: array is {array.dtype} {array.shape}, expected uint8 "
                               f"(N, 32, 32, 3). {REFETCH}")
    keep = pick_subset(len(array), count, seed)
    out = np.empty((len(keep), 28, 28), dtype=np.uint8)
    # Converted in chunks straight from the memory map: the full float copy would need 3.7 GB.
    for start in range(0, len(keep), chunk):
        rows = keep[start:start + chunk]
        out[start:start + len(rows)] = mnist_frame(luminance(np.asarray(array[rows])), spec["polarity"])
    return {"x_train": out, "y_train": np.full(len(out), -1, dtype=np.int64)}


READERS = {"idx": _read_idx_splits, "emnist_letters": _read_emnist_letters, "omniglot": _read_omniglot,
           "cifar": _read_cifar, "notmnist": _read_notmnist, "tiny300k": _read_tiny300k}
