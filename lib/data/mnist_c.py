"""The official MNIST-C (Mu & Gilmer 2019): checked download of mnist_c.zip and extraction of its test arrays.

    from lib.data.mnist_c import fetch_mnist_c, extract_mnist_c
    zip_path = fetch_mnist_c("data")                          # login node; data/mnist_c.zip, md5 checked
    extract_mnist_c(zip_path, "results/data/corruptions")     # <corruption>.npz: x_test [N,28,28], y_test

    python -m lib.data.mnist_c fetch --data-dir data [--offline] [--sources-json s.json] [--record r.json]
    python -m lib.data.mnist_c extract --data-dir data --out-dir results/data/corruptions [--corruptions a,b]

The zip (235 MiB) holds mnist_c/<corruption>/{train,test}_{images,labels}.npy for 15
corruptions plus identity; only the test arrays are read. A wrong checksum or a truncated
download is retried once, then reported with the file, the expected md5 and how to
stage it by hand. `sources` uses lib.data.real's schema under the key "mnist_c".
"""
import argparse
import io
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lib.data.download import CorruptFileError, DataError, ensure_file, stage_hint, write_atomically

MNIST_C_URL = "https://zenodo.org/record/3239543/files/mnist_c.zip"
MNIST_C_MD5 = "4b34b33045869ee6d424616cd3a65da3"
MNIST_C_FILE = "mnist_c.zip"
TEST_COUNT = 10000
CORRUPTIONS = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
               "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges")
LICENCE = "Zenodo record 3239543 (see the record for its licence)."
CITATION = "N. Mu, J. Gilmer: MNIST-C: A Robustness Benchmark for Computer Vision, arXiv:1906.02337 (2019)."


def mnist_c_source(sources=None):
    """(urls, md5) for mnist_c.zip after the data_sources['mnist_c'] overrides (mirrors/url, md5)."""
    override = (sources or {}).get("mnist_c") or {}
    unknown = set(override) - {"mirrors", "url", "md5"}
    if unknown:
        raise ValueError(f"data_sources.mnist_c: unknown key(s) {sorted(unknown)}; allowed: mirrors, url, md5")
    mirrors = override.get("mirrors") or ([override["url"]] if override.get("url") else None)
    urls = [m.rstrip("/") + "/" + MNIST_C_FILE for m in mirrors] if mirrors else [MNIST_C_URL]
    md5 = (override.get("md5") or {}).get(MNIST_C_FILE, MNIST_C_MD5)
    return urls, md5


def fetch_mnist_c(data_dir, offline=False, url=MNIST_C_URL, md5=MNIST_C_MD5, retries=1, wait_s=2.0,
                  progress=True):
    """<data_dir>/mnist_c.zip, md5-checked; downloaded when missing unless offline.

    url may be one URL or a list of mirrors. md5=None records the sha256 of the first
    copy in <data_dir>/CHECKSUMS.json instead.
    """
    urls = [url] if isinstance(url, str) else list(url)
    return ensure_file(data_dir, MNIST_C_FILE, urls, md5=md5, offline=offline, retries=retries,
                       wait_s=wait_s, progress=progress)


def _load_member(archive, member, zip_path):
    try:
        raw = archive.read(member)
    except KeyError as e:
        raise CorruptFileError(f"{zip_path}: no {member} inside; this is not the MNIST-C archive. "
                               f"{stage_hint(zip_path, [MNIST_C_URL], MNIST_C_MD5)}") from e
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise CorruptFileError(f"{zip_path}: {member} is damaged ({e}). Delete the zip and fetch it "
                               f"again. {stage_hint(zip_path, [MNIST_C_URL], MNIST_C_MD5)}") from e
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptFileError(f"{zip_path}: {member} is not a readable .npy array ({e}).") from e


def read_corruption(archive, corruption, zip_path, count=TEST_COUNT):
    """(x_test uint8 [count, 28, 28], y_test int64 [count]) of one corruption, shape-checked."""
    images = _load_member(archive, f"mnist_c/{corruption}/test_images.npy", zip_path)
    labels = _load_member(archive, f"mnist_c/{corruption}/test_labels.npy", zip_path)
    if images.shape != (count, 28, 28, 1) or images.dtype != np.uint8:
        raise CorruptFileError(f"{zip_path}: mnist_c/{corruption}/test_images.npy is {images.dtype} "
                               f"{images.shape}, expected uint8 ({count}, 28, 28, 1).")
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer) \
            or labels.min() < 0 or labels.max() > 9:
        raise CorruptFileError(f"{zip_path}: mnist_c/{corruption}/test_labels.npy is {labels.dtype} "
                               f"{labels.shape}, expected {count} integer labels in 0..9.")
    return np.ascontiguousarray(images[..., 0]), labels.astype(np.int64)


def extract_mnist_c(zip_path, out_dir, corruptions=None, count=TEST_COUNT):
    """Write <out_dir>/<corruption>.npz (x_test, y_test) per corruption; return the paths.

    Every array is read and checked before the first file is written, so a bad archive
    leaves out_dir as it was.
    """
    names = list(corruptions or CORRUPTIONS)
    unknown = sorted(set(names) - set(CORRUPTIONS))
    if unknown:
        raise ValueError(f"unknown MNIST-C corruption(s) {unknown}; known: {', '.join(CORRUPTIONS)}")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CorruptFileError(f"{zip_path}: not a readable zip archive ({e}); it is truncated or "
                               f"damaged. Delete it and fetch again. "
                               f"{stage_hint(zip_path, [MNIST_C_URL], MNIST_C_MD5)}") from e
    with archive:
        arrays = {c: read_corruption(archive, c, zip_path, count) for c in names}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for corruption, (x, y) in arrays.items():
        path = out_dir / f"{corruption}.npz"
        write_atomically(path, lambda f: np.savez(f, x_test=x, y_test=y))
        paths.append(path)
    return paths


def main(argv=None):
    from lib.data.real import read_sources, write_record
    parser = argparse.ArgumentParser(prog="python -m lib.data.mnist_c", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download (or, offline, check) data_dir/mnist_c.zip")
    extract = sub.add_parser("extract", help="check data_dir/mnist_c.zip and write one npz per corruption")
    for p in (fetch, extract):
        p.add_argument("--data-dir", required=True)
        p.add_argument("--sources-json", help="the config's data_sources mapping: a JSON file or JSON text")
    fetch.add_argument("--offline", action="store_true")
    fetch.add_argument("--record", help="write the verified file (JSON) here")
    extract.add_argument("--out-dir", required=True)
    extract.add_argument("--corruptions", help="comma-separated subset (default: all 15)")
    args = parser.parse_args(argv)
    urls, md5 = mnist_c_source(read_sources(args.sources_json))
    try:
        if args.command == "fetch":
            path = fetch_mnist_c(args.data_dir, offline=args.offline, url=urls, md5=md5)
            if args.record:
                write_record(args.record, "mnist_c", {"zip": path})
            print(f"mnist_c: ok: {path}")
        else:
            zip_path = fetch_mnist_c(args.data_dir, offline=True, url=urls, md5=md5)
            chosen = args.corruptions.split(",") if args.corruptions else None
            paths = extract_mnist_c(zip_path, args.out_dir, chosen)
            print(f"mnist_c: wrote {len(paths)} file(s) to {args.out_dir}")
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
