"""How each real data set's raw files become MNIST-like arrays (one reader per format).

    from lib.data.readers import READERS
    arrays = READERS["omniglot"]({"zip": path}, spec, count=None, seed=0)   # {"x_test", "y_test"}

A reader gets the verified paths of a set's files (keys as in lib.data.real's registry),
the set's spec (splits, polarity), and an optional seeded subset size; it returns uint8
[N, 28, 28] white-on-black images and int64 labels per split, and raises
CorruptFileError naming the file when the content is not what the format promises.
"""
import io
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lib.data.download import CorruptFileError
from lib.data.formats import REFETCH, load_cifar_batch, luminance, mnist_frame, parse_idx, read_idx


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
