"""Small files in the real data sets' formats, built here, and a local server that serves them.

    files, expect = build_idx(np.random.default_rng(0))   # MNIST's four .gz files, and their arrays
    sources = serve(http_server, "fashion_mnist", files)   # a data_sources entry pointing at them
    body, arrays, labels = mnist_c_zip(count=20)           # Zenodo's mnist_c.zip layout
"""
import gzip
import hashlib
import io
import pickle
import tarfile
import zipfile

import numpy as np
from PIL import Image

from lib.data.mnist_c import CORRUPTIONS


def md5(data):
    return hashlib.md5(data).hexdigest()


def idx_bytes(array, compress=True, mtime=0):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return gzip.compress(raw, mtime=mtime) if compress else raw


def png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def dark_on_light(n, size, rng):
    """Light background (220) with a dark random rectangle (20): ink darker than paper."""
    x = np.full((n, size, size), 220, dtype=np.uint8)
    for img in x:
        r, c = rng.integers(size // 4, size // 2, size=2)
        img[r:r + size // 3, c:c + size // 4] = 20
    return x


def mnist_like(n, rng):
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    x[:, 8:20, 10:18] = rng.integers(100, 256, size=(n, 12, 8))
    return x


def build_idx(rng):
    x_tr, x_te = mnist_like(12, rng), mnist_like(5, rng)
    y_tr, y_te = rng.integers(0, 10, 12).astype(np.uint8), rng.integers(0, 10, 5).astype(np.uint8)
    files = {"train-images-idx3-ubyte.gz": idx_bytes(x_tr), "train-labels-idx1-ubyte.gz": idx_bytes(y_tr),
             "t10k-images-idx3-ubyte.gz": idx_bytes(x_te), "t10k-labels-idx1-ubyte.gz": idx_bytes(y_te)}
    expect = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
    return files, expect


def build_emnist(rng):
    x_tr, x_te = mnist_like(6, rng), mnist_like(4, rng)
    y_tr, y_te = rng.integers(1, 27, 6).astype(np.uint8), rng.integers(1, 27, 4).astype(np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
            # EMNIST stores images transposed; the loader turns them upright.
            z.writestr(f"gzip/emnist-letters-{split}-images-idx3-ubyte.gz", idx_bytes(x.transpose(0, 2, 1)))
            z.writestr(f"gzip/emnist-letters-{split}-labels-idx1-ubyte.gz", idx_bytes(y))
        z.writestr("gzip/emnist-digits-test-images-idx3-ubyte.gz", idx_bytes(mnist_like(2, rng)))
    return {"gzip.zip": buf.getvalue()}, {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def build_omniglot(rng):
    buf = io.BytesIO()
    labels = []
    with zipfile.ZipFile(buf, "w") as z:
        for a, alphabet in enumerate(["Atlantean", "Kannada"]):
            for c in range(2):
                for d, img in enumerate(dark_on_light(2, 105, rng)):
                    z.writestr(f"images_evaluation/{alphabet}/character{c + 1:02d}/0{a}{c}_{d}.png",
                               png_bytes(img))
                    labels.append(2 * a + c)
    return {"images_evaluation.zip": buf.getvalue()}, {"y_test": np.array(labels)}


def cifar_batch_bytes(rgb, labels):
    data = rgb.transpose(0, 3, 1, 2).reshape(len(rgb), -1)
    return pickle.dumps({"batch_label": "testing batch 1 of 1", "data": data, "labels": list(labels)},
                        protocol=2)


def build_cifar(rng):
    grey = dark_on_light(6, 32, rng)
    rgb = np.repeat(grey[..., None], 3, axis=3)
    labels = rng.integers(0, 10, 6)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, body in (("cifar-10-batches-py/test_batch", cifar_batch_bytes(rgb, labels)),
                           ("cifar-10-batches-py/batches.meta", b"meta")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    return {"cifar-10-python.tar.gz": buf.getvalue()}, {"y_test": labels}


def tar_gz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def build_notmnist(rng):
    members, labels = {}, []
    for letter in "ABJ":
        for i, img in enumerate(dark_on_light(2, 28, rng)):
            members[f"notMNIST_small/{letter}/font{i}.png"] = png_bytes(img)
            labels.append(ord(letter) - ord("A"))
    members["notMNIST_small/A/empty.png"] = b""  # the real archive has a few unreadable files
    return {"notMNIST_small.tar.gz": tar_gz(members)}, {"y_test": np.array(labels)}


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def build_tiny(rng):
    rgb = np.repeat(dark_on_light(30, 32, rng)[..., None], 3, axis=3)
    return {"300K_random_images.npy": npy_bytes(rgb)}, {"y_train": np.full(30, -1)}


BUILDERS = {"mnist": build_idx, "fashion_mnist": build_idx, "kmnist": build_idx,
            "emnist_letters": build_emnist, "omniglot": build_omniglot, "cifar10_gray": build_cifar,
            "notmnist": build_notmnist, "tiny300k": build_tiny}


def serve(http_server, name, files):
    """Put files on the server under <name>/ and return sources pointing there with their md5s."""
    for filename, body in files.items():
        http_server.files[f"{name}/{filename}"] = body
    return {name: {"url": http_server.url(name + "/"),
                   "md5": {f: md5(b) for f, b in files.items()},
                   "size": {f: len(b) for f, b in files.items()}, "system_dir": None}}


def mnist_c_zip(count=10000, shape=(28, 28, 1), dtype=np.uint8, corruptions=CORRUPTIONS):
    """A zip laid out like Zenodo's mnist_c.zip: mnist_c/<c>/{train,test}_{images,labels}.npy.

    Test arrays have the real size; images are black with a small patch that differs per
    corruption, so they compress well and a mix-up between corruptions shows.
    """
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, count).astype(np.int64)
    arrays = {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for i, c in enumerate(list(corruptions) + ["identity"]):
            x = np.zeros((count,) + shape, dtype=dtype)
            x[:, 10:14, 10 + i % 10:12 + i % 10] = rng.integers(1, 256, size=(count, 4, 2) + shape[2:])
            arrays[c] = x
            z.writestr(f"mnist_c/{c}/test_images.npy", npy_bytes(x))
            z.writestr(f"mnist_c/{c}/test_labels.npy", npy_bytes(labels))
            z.writestr(f"mnist_c/{c}/train_images.npy", npy_bytes(np.zeros((3,) + shape, dtype=dtype)))
            z.writestr(f"mnist_c/{c}/train_labels.npy", npy_bytes(labels[:3]))
    return buf.getvalue(), arrays, labels
