"""Real data sets: registry, checked fetch (the only networked step), and conversion to MNIST's frame.

    from lib.data.real import REAL_DATASETS, fetch_dataset, load_real_dataset, expected_files
    fetch_dataset("kmnist", "data")                        # login node: downloads what is missing
    fetch_dataset("kmnist", "data", offline=True)          # never downloads; lists what to stage
    arrays = load_real_dataset("kmnist", "data")           # x_train, y_train, x_test, y_test

    python -m lib.data.real fetch kmnist --data-dir data [--offline] [--sources-json s.json]
        [--record results/data/fetched/kmnist.json]
    python -m lib.data.real prepare kmnist --data-dir data --out results/data/kmnist.npz
    python -m lib.data.real prepare tiny300k --data-dir data --out results/data/tiny300k.npz --train-count 50000

Files sit under data_dir in torchvision's layout (MNIST/raw/..., omniglot-py/...,
cifar-10-python.tar.gz), so a folder filled by torchvision's download=True works as is.
Every set comes out as uint8 [N, 28, 28], white on black, labels int64 (-1: none).

`sources` (config key data_sources) overrides, per set; file names are the last
path part shown by expected_files():
    {"mnist": {"mirrors": ["http://host/mnist/"],            # base URLs; file names are appended
               "url": "http://host/mnist/",                   # shorthand for one mirror
               "md5": {"train-images-idx3-ubyte.gz": "..."},  # pin (null: unpin, record sha256)
               "sha256": {"...": "..."},                      # pin
               "plain_md5": {"...": "..."},                   # md5 of the decompressed/extracted form
               "size": {"...": 123},                          # pin the size in bytes (null: unpin)
               "system_dir": "/usr/share/datasets/mnist",     # a read-only copy to use instead
               "polarity": "keep" | "invert" | "auto"}}
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from lib.data.download import (ChecksumError, CorruptFileError, DataError, MissingDataError, ensure_file,
                          file_digests, forget_checksums, recorded_checksums, stage_hint,
                          verify_or_record, write_atomically)
from lib.data.registry import DATASETS
from lib.data.readers import READERS, maybe_gunzip, pick_subset

# Debian's dataset-fashion-mnist re-compresses the upstream files (new gzip headers, so
# torchvision's md5s no longer match); the decompressed IDX bytes are unchanged and are
# checked against these md5s (computed from the package's files).
FASHION_PLAIN_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}
NOTMNIST_URLS = ["http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz",
                 "https://commondatastorage.googleapis.com/books1000/notMNIST_small.tar.gz"]
POLARITIES = ("keep", "invert", "auto")
TINY300K_URL = "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy"


def _resource(path, urls, md5=None, plain=None, plain_md5=None, size=None):
    return {"path": path, "urls": list(urls), "md5": md5, "sha256": None, "size": size,
            "plain": plain, "plain_md5": plain_md5}


def _idx_resources(tv_class, plain_md5=None):
    """One resource per file in a torchvision MNIST-style class, mirrors and md5s as it has them."""
    folder = f"{tv_class.__name__}/raw"
    files = {}
    for filename, md5 in tv_class.resources:
        split = "train" if filename.startswith("train") else "test"
        kind = "images" if "images" in filename else "labels"
        files[f"{split}_{kind}"] = _resource(
            f"{folder}/{filename}", [m + filename for m in tv_class.mirrors], md5,
            plain=f"{folder}/{filename[:-3]}", plain_md5=(plain_md5 or {}).get(filename))
    return files


def _registry():
    """Fetch and conversion details per downloaded set; title, splits, licence and citation
    come from the one registry of names, lib.data.registry.DATASETS."""
    from torchvision import datasets as tv
    omniglot_zip = "images_evaluation.zip"
    cifar_test = dict(tv.CIFAR10.test_list)["test_batch"]
    how = {
        "mnist": dict(files=_idx_resources(tv.MNIST), reader="idx", polarity="keep"),
        "fashion_mnist": dict(files=_idx_resources(tv.FashionMNIST, FASHION_PLAIN_MD5), reader="idx",
                              polarity="keep", system_dir="/usr/share/datasets/fashion-mnist"),
        "kmnist": dict(files=_idx_resources(tv.KMNIST), reader="idx", polarity="keep"),
        "omniglot": dict(
            reader="omniglot", polarity="invert",
            files={"zip": _resource(f"{tv.Omniglot.folder}/{omniglot_zip}",
                                    [f"{tv.Omniglot.download_url_prefix}/{omniglot_zip}"],
                                    tv.Omniglot.zips_md5["images_evaluation"])}),
        "cifar10_gray": dict(
            reader="cifar", polarity="auto",
            files={"archive": _resource(tv.CIFAR10.filename, [tv.CIFAR10.url], tv.CIFAR10.tgz_md5,
                                        plain=f"{tv.CIFAR10.base_folder}/test_batch",
                                        plain_md5=cifar_test)}),
        "notmnist": dict(reader="notmnist", polarity="auto",
                         files={"archive": _resource("notMNIST_small.tar.gz", NOTMNIST_URLS, size=8458043)}),
        "emnist_letters": dict(reader="emnist_letters", polarity="keep",
                               files={"zip": _resource("EMNIST/raw/gzip.zip", [tv.EMNIST.url], tv.EMNIST.md5)}),
        "tiny300k": dict(reader="tiny300k", polarity="auto",
                         files={"array": _resource("300K_random_images.npy", [TINY300K_URL])}),
    }
    about = ("title", "source", "splits", "size", "licence", "citation")
    return {name: {**{k: DATASETS[name][k] for k in about}, **spec} for name, spec in how.items()}


REAL_DATASETS = _registry()


def dataset_spec(name, sources=None):
    """The registry entry with the per-set overrides of `sources` applied (a fresh copy)."""
    if name not in REAL_DATASETS:
        raise KeyError(f"unknown real data set {name!r}; known: {', '.join(sorted(REAL_DATASETS))}")
    base = REAL_DATASETS[name]
    spec = {**base, "files": {k: dict(v) for k, v in base["files"].items()}}
    override = (sources or {}).get(name) or {}
    unknown = set(override) - {"mirrors", "url", "md5", "sha256", "plain_md5", "size", "system_dir",
                               "polarity"}
    if unknown:
        raise ValueError(f"data_sources.{name}: unknown key(s) {sorted(unknown)}; allowed: mirrors, url, "
                         f"md5, sha256, plain_md5, size, system_dir, polarity")
    mirrors = override.get("mirrors") or ([override["url"]] if override.get("url") else None)
    for res in spec["files"].values():
        filename = res["path"].rsplit("/", 1)[-1]
        if mirrors:
            res["urls"] = [m if m.endswith("/") else m + "/" for m in mirrors]
            res["urls"] = [m + filename for m in res["urls"]]
        for field in ("md5", "sha256", "plain_md5", "size"):
            if filename in (override.get(field) or {}):
                res[field] = override[field][filename]
    if "system_dir" in override:
        spec["system_dir"] = override["system_dir"] or None
    if "polarity" in override:
        if override["polarity"] not in POLARITIES:
            raise ValueError(f"data_sources.{name}.polarity must be one of {POLARITIES}, "
                             f"not {override['polarity']!r}")
        spec["polarity"] = override["polarity"]
    return spec


def expected_files(name, data_dir, sources=None):
    """[(path under data_dir, [URLs to get it from])] for every file a set needs."""
    spec = dataset_spec(name, sources)
    return [(Path(data_dir) / res["path"], list(res["urls"])) for res in spec["files"].values()]


def _plain_md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(maybe_gunzip(f.read(), str(path))).hexdigest()


def _check_alternative(path, res, data_dir):
    """A plain (extracted) copy in data_dir or a system copy: same bytes as the download, or
    the same decompressed content, or (nothing published for that form) recorded sha256."""
    digests = file_digests(path)
    if res["md5"] and digests["md5"] == res["md5"]:
        return digests
    if res["plain_md5"]:
        got = _plain_md5(path)
        if got != res["plain_md5"]:
            raise ChecksumError(
                f"{path}: decompressed content has md5 {got}, expected {res['plain_md5']}; the copy is "
                f"damaged or a different version. Remove or repair it. "
                f"{stage_hint(Path(data_dir) / res['path'], res['urls'], res['md5'])}")
        return digests
    return verify_or_record(path, data_dir, str(Path(path).resolve()), urls=res["urls"])


def _find_copy(res, data_dir, system_dir):
    """(path, is_primary) of the first present copy of a resource, or None."""
    primary = Path(data_dir) / res["path"]
    if primary.exists():
        return primary, True
    candidates = [Path(data_dir) / res["plain"]] if res["plain"] else []
    if system_dir:
        names = [res["path"].rsplit("/", 1)[-1]] + ([res["plain"].rsplit("/", 1)[-1]] if res["plain"] else [])
        candidates += [Path(system_dir) / n for n in names]
    for path in candidates:
        if path.exists():
            return path, False
    return None


def _missing_message(name, spec, data_dir, missing):
    lines = [f"offline mode: {len(missing)} of {len(spec['files'])} file(s) of data set '{name}' are "
             f"missing under data_dir {Path(data_dir).resolve()}, and offline mode never downloads.",
             "Expected files (torchvision's layout; download each on a machine with internet and copy "
             "it to the path shown):"]
    for key, res in spec["files"].items():
        pin = f"md5 {res['md5']}" if res["md5"] else (f"sha256 {res['sha256']}" if res["sha256"]
                                                      else "sha256 recorded on first use")
        state = "MISSING" if key in missing else "present"
        lines.append(f"  [{state}] {Path(data_dir) / res['path']}  ({pin})")
        lines.extend(f"      from {u}" for u in res["urls"])
    if spec.get("system_dir"):
        lines.append(f"A system copy in {spec['system_dir']} is used too when present.")
    lines.append(f"Or run `python -m lib.data.real fetch {name} --data-dir {data_dir}` where there is "
                 f"internet (the workflow's fetch rules do this on the submit host when offline is false).")
    return "\n".join(lines)


def _refused_message(name, spec, refused):
    """Every refused file of a set with its reason, and how to declare copies that differ on purpose."""
    lines = [f"{len(refused)} of {len(spec['files'])} file(s) of data set '{name}' do not match their checksums:"]
    lines += [f"  {message}" for _, message in refused.values()]
    pinned = {res["path"].rsplit("/", 1)[-1]: path for key, (path, _) in refused.items()
              for res in [spec["files"][key]] if res["md5"] or res["sha256"] or res["plain_md5"]}
    if pinned:
        md5s = ", ".join(f"{file}: {file_digests(path)['md5']}" for file, path in pinned.items())
        lines.append(
            f"If these are your own copies on purpose (another mirror's or a re-compressed version), say so in "
            f"the config instead of replacing them: pin their checksums with\n"
            f"  data_sources: {{{name}: {{md5: {{{md5s}}}}}}}\n"
            f"or unpin them with null in place of each md5 (the sha256 is then recorded on first use); "
            f"see docs/data.md, 'Overriding sources and pinning checksums'.")
    return "\n".join(lines)


def fetch_dataset(name, data_dir, offline=False, sources=None, retries=3, wait_s=2.0, progress=True):
    """{file key: verified path} for a set; downloads missing files unless offline.

    The only function in lib that touches the network; run it on a machine with internet
    (the workflow's local rules). Offline, a missing file raises MissingDataError listing
    every expected file, its path under data_dir and its URLs.
    """
    spec = dataset_spec(name, sources)
    found, missing, refused = {}, [], {}
    for key, res in spec["files"].items():
        copy = _find_copy(res, data_dir, spec.get("system_dir"))
        if copy is None:
            missing.append(key)
            continue
        path, primary = copy
        try:
            if primary:
                verify_or_record(path, data_dir, res["path"], res["md5"], res["sha256"], res["size"],
                                 source=str(path), urls=res["urls"])
            else:
                _check_alternative(path, res, data_dir)
        except ChecksumError as error:
            refused[key] = (path, str(error))  # every file is checked, so one message names them all
            continue
        found[key] = path
    if refused:
        raise ChecksumError(_refused_message(name, spec, refused))
    if missing and offline:
        raise MissingDataError(_missing_message(name, spec, data_dir, missing))
    for key in missing:
        res = spec["files"][key]
        found[key] = ensure_file(data_dir, res["path"], res["urls"], res["md5"], res["sha256"],
                                 res["size"], retries=retries, wait_s=wait_s, progress=progress)
    return found


def load_real_dataset(name, data_dir, sources=None, count=None, seed=0, train_count=None):
    """{'x_train','y_train','x_test','y_test'} (splits the set has) in MNIST's frame; never downloads.

    count keeps a seeded random subset of that many images per split; train_count does so
    for the training split alone (the Outlier-Exposure subset of tiny300k or of a set
    whose test split is also an OOD test set, which stays whole).
    """
    spec = dataset_spec(name, sources)
    paths = fetch_dataset(name, data_dir, offline=True, sources=sources)
    train_only = tuple(spec["splits"]) == ("train",)
    if train_only and train_count is not None:
        # Subset while reading: tiny300k converts only the images it keeps.
        count = train_count if count is None else min(count, train_count)
    try:
        arrays = READERS[spec["reader"]](paths, spec, count, seed)
    except CorruptFileError as error:
        _forget_unreadable_records(data_dir, paths, str(error))
        raise
    if not train_only and train_count is not None and "x_train" in arrays:
        keep = pick_subset(len(arrays["x_train"]), train_count, seed)
        arrays["x_train"], arrays["y_train"] = arrays["x_train"][keep], arrays["y_train"][keep]
    return arrays


def _forget_unreadable_records(data_dir, paths, message):
    """Drop every sha256 recorded on first use from the very bytes a reader just refused.

    Otherwise the error's advice (replace the file with a good copy) would end in a
    checksum error against the bad copy. A record is matched by its hash, not its key:
    a staged plain (uncompressed) copy or a system copy is recorded under its own path.
    The refused file is the one the message names (all of the set's files when it names
    none); records of other bytes stay.
    """
    named = [p for p in paths.values() if str(p) in message]
    refused = {file_digests(p)["sha256"] for p in (named or paths.values())}
    stale = [key for key, entry in recorded_checksums(data_dir).items() if entry.get("sha256") in refused]
    if stale:
        forget_checksums(data_dir, stale)


def save_npz_atomic(path, arrays):
    write_atomically(path, lambda f: np.savez(f, **arrays))


def read_sources(path_or_text):
    """The data_sources mapping from a JSON file, or from JSON text starting with '{' (None: none)."""
    if not path_or_text:
        return None
    text = path_or_text if path_or_text.lstrip().startswith("{") else Path(path_or_text).read_text()
    sources = json.loads(text)
    if not isinstance(sources, dict):
        raise ValueError(f"data_sources must be a mapping of data set names, got {type(sources).__name__}")
    return sources


def write_record(path, name, paths):
    """The fetch rule's output: which files were verified, where, with their sha256."""
    record = {"dataset": name, "files": {k: {"path": str(p), "sha256": file_digests(p)["sha256"]}
                                         for k, p in paths.items()}}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    write_atomically(path, lambda f: f.write(text.encode()))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lib.data.real", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("fetch", "prepare"):
        p = sub.add_parser(command)
        p.add_argument("name", choices=sorted(REAL_DATASETS))
        p.add_argument("--data-dir", required=True)
        p.add_argument("--sources-json", help="the config's data_sources mapping: a JSON file or JSON text")
    sub.choices["fetch"].add_argument("--offline", action="store_true", help="never download")
    sub.choices["fetch"].add_argument("--record", help="write the verified file list (JSON) here")
    sub.choices["fetch"].add_argument("--retries", type=int, default=3)
    sub.choices["prepare"].add_argument("--out", required=True)
    sub.choices["prepare"].add_argument("--count", type=int, help="random subset of this many per split")
    sub.choices["prepare"].add_argument("--train-count", type=int,
                                        help="random subset of this many training images (test split kept whole)")
    sub.choices["prepare"].add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sources = read_sources(args.sources_json)
    try:
        if args.command == "fetch":
            paths = fetch_dataset(args.name, args.data_dir, offline=args.offline, sources=sources,
                                  retries=args.retries)
            if args.record:
                write_record(args.record, args.name, paths)
            for key, path in paths.items():
                print(f"{args.name}: {key} ok: {path}")
        else:
            arrays = load_real_dataset(args.name, args.data_dir, sources, count=args.count, seed=args.seed,
                                       train_count=args.train_count)
            save_npz_atomic(args.out, arrays)
            shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
            print(f"{args.name}: wrote {args.out} ({shapes})")
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
