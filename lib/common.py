"""Small helpers every stage shares: atomic writes, seeds, device choice, logging.

    from lib.common import derive_seed, save_npz_atomic, pick_device
    seed = derive_seed(0, "train", "pixmix", "oe", 1)   # stable across runs and machines
    save_npz_atomic("results/x.npz", logits=arr)          # never leaves a half-written file
    device = pick_device()                                # cuda if present, else cpu + one warning
"""
import errno
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import zipfile
import zlib

import numpy as np

log = logging.getLogger("mnist_safety")


def derive_seed(base_seed, *parts):
    """A 31-bit seed from the config seed and any labels (wildcards, stage names).

    Python's hash() is salted per process, so we hash the text with sha256 instead:
    the same (base_seed, parts) gives the same seed on every machine and every run.
    """
    text = "/".join([str(base_seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def _temporary_beside(path, suffix):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", suffix=suffix, dir=folder)
    os.close(fd)
    # mkstemp makes the file 0600; results are shared with the group like any other output.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


# errno values that mean "this folder cannot take the file": say so instead of naming a temporary file.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _unwritable_error(path, error):
    folder = os.path.dirname(os.path.abspath(path))
    return type(error)(error.errno, (
        f"cannot write {path}: {error.strerror} in {folder} (read-only, no permission, or the disk "
        f"or quota is full). Make the folder writable or free space, then rerun; nothing was written "
        f"at {path}."))


def replace_atomic(path, write):
    """Call write(tmp_path), then rename tmp onto path; on any error remove tmp.

    Renaming within one folder is atomic on POSIX, so a killed job leaves either the
    old file or the new one, never a truncated file that looks finished.
    """
    try:
        tmp = _temporary_beside(path, os.path.splitext(path)[1])
    except OSError as e:
        if e.errno in _UNWRITABLE:
            raise _unwritable_error(path, e) from e
        raise
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno in _UNWRITABLE:
            raise _unwritable_error(path, e) from e
        raise


def save_npz_atomic(path, **arrays):
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    replace_atomic(path, write)


def write_json_atomic(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
            f.write("\n")
    replace_atomic(path, write)


def write_text_atomic(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    replace_atomic(path, write)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def setup_logging(log_file=None):
    """Log to stderr and, when given, to the rule's log file (Snakemake's `log:`)."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    return log


def job_logger(log_path):
    """A logger writing only to one job's log file: `run:` jobs share Snakemake's process,
    so they must neither touch the root logger nor write to each other's files."""
    logger = logging.getLogger(f"mnist_safety.job.{log_path}")
    logger.handlers[:] = [logging.FileHandler(log_path, mode="w")]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def missing_cuda():
    """Why `train.device: cuda` cannot run here, or None when torch sees a GPU."""
    import torch
    if torch.cuda.is_available():
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
    return (f"config key 'train.device': device 'cuda' is asked for, but torch sees no GPU on {platform.node()} "
            f"(CUDA_VISIBLE_DEVICES={visible}, torch {torch.__version__} built for CUDA "
            f"{torch.version.cuda or 'none'}); set train.device: auto (the CPU when there is no GPU) or cpu, "
            f"or run where a GPU is (check the job's GPU request)")


def pick_device(requested="auto"):
    """CUDA when present (or asked for), else the CPU with one warning line in the log."""
    import torch
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        raise RuntimeError(missing_cuda())
    # What the job was given and what torch was built for tell a GPU the scheduler handed
    # out but torch cannot use (a CPU-only wheel, a driver too old) from no GPU at all.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
    log.warning("no CUDA device found (CUDA_VISIBLE_DEVICES=%s, torch %s built for CUDA %s): "
                "running on the CPU (slow for the full study)",
                visible, torch.__version__, torch.version.cuda or "none")
    return torch.device("cpu")


def use_threads(threads, log):
    """torch.set_num_threads(threads), logged with the cores this process may run on (a
    SLURM job's allocation, a taskset): `threads N of M usable cores`. More threads than
    usable cores only makes them wait for each other, so that case is a warning."""
    import torch
    torch.set_num_threads(threads)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    log.info("threads %d of %d usable cores", torch.get_num_threads(), usable)
    if threads > usable:
        log.warning("%d threads asked for (Snakemake's threads) but only %d cores are usable here: "
                    "lower set-threads in the profile or ask the cluster for more cores", threads, usable)


def device_name(device):
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU: {name} ({os.cpu_count()} cores)"


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class CachedFileError(ValueError):
    """A file the workflow wrote (results/...) that cannot be used as it is."""


class MissingCachedFileError(CachedFileError, FileNotFoundError):
    pass


REBUILD = ("Delete it and rerun the same snakemake command: it is written again, and everything "
           "computed from it after it (docs/failure-modes.md).")

# What each array of the workflow's .npz files must be: (what it is, dtype check, shape with
# None for any length). Every reader goes through load_npz, so a table, a figure or a summary
# is never computed from a damaged, mis-shaped or non-finite cached array.
ARRAY_CONTRACTS = {
    **{name: ("images", "uint8", (None, 28, 28)) for name in ("x_train", "x_test", "images")},
    **{name: ("labels", "integer", (None,)) for name in ("y_train", "y_test", "labels")},
    **{name: ("logits", "floating", (None, None)) for name in ("logits", "odin_logits")},
    "features": ("penultimate features", "floating", (None, None)),
    "class_means": ("class means", "floating", (None, None)),
    "precision": ("precision matrix", "floating", (None, None)),
    **{name: ("per-example scores", "floating", (None,)) for name in ("id_scores", "ood_scores", "knn_distance")},
    "head_weight": ("last-layer weight", "floating", (None, None)),
    "vim_residual_basis": ("ViM residual basis", "floating", (None, None)),
}
_SAME_LENGTH = [("x_train", "y_train"), ("x_test", "y_test"),
                ("logits", "labels", "features", "odin_logits", "knn_distance")]


def _dtype_ok(array, kind):
    if kind == "uint8":
        return array.dtype == np.uint8
    return np.issubdtype(array.dtype, np.integer if kind == "integer" else np.floating)


def array_problems(arrays):
    """What is wrong with a dict of named arrays against ARRAY_CONTRACTS ([] when nothing).

    Names the contract does not know are taken as they are."""
    problems = []
    for name, array in arrays.items():
        if name not in ARRAY_CONTRACTS:
            continue
        what, kind, shape = ARRAY_CONTRACTS[name]
        wanted = "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
        if not _dtype_ok(array, kind) or array.ndim != len(shape) or any(
                d is not None and d != got for d, got in zip(shape, array.shape)):
            problems.append(f"'{name}' is {array.dtype} {list(array.shape)}, expected {kind} {wanted} ({what})")
        elif len(array) == 0:
            problems.append(f"'{name}' is empty ({what} of no example)")
        elif kind == "floating" and not np.isfinite(array).all():
            bad = ~np.isfinite(array)
            row = int(np.argwhere(bad)[0][0])
            kinds = ", ".join(k for k, hit in (("NaN", np.isnan(array).any()), ("inf", np.isinf(array).any())) if hit)
            problems.append(f"'{name}' holds {int(bad.sum())} non-finite value(s) ({kinds}; first in row {row})")
        elif kind == "integer" and array.min() < -1:
            problems.append(f"'{name}' holds {int(array.min())}; labels are class numbers, or -1 for none")
    for group in _SAME_LENGTH:
        lengths = {name: len(arrays[name]) for name in group if name in arrays and np.ndim(arrays[name])}
        if len(set(lengths.values())) > 1:
            problems.append("lengths differ: " + ", ".join(f"'{k}' {v}" for k, v in lengths.items()))
    logits, labels = arrays.get("logits"), arrays.get("labels")
    if not problems and logits is not None and labels is not None and labels.max() >= logits.shape[1]:
        problems.append(f"'labels' holds class {int(labels.max())} but 'logits' has {logits.shape[1]} classes")
    return problems


def load_npz(path, required=(), names=None):
    """Every array of a cached .npz file (or only those in `names`), checked against ARRAY_CONTRACTS.

    Raises CachedFileError naming the file, what is wrong with it and how to rebuild it:
    missing, damaged or truncated, an array missing from `required`, or an array of the
    wrong dtype or shape, empty, or with a NaN or an infinity. `names` skips reading the
    other arrays (a logits file's features can be a hundred times its logits).
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if names is None or k in names}
    except FileNotFoundError:
        raise MissingCachedFileError(f"{path} is missing. Rerun the same snakemake command: it is written again "
                              f"(docs/failure-modes.md).") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise CachedFileError(f"{path} is damaged or truncated ({type(e).__name__}: {e}). {REBUILD}") from None
    absent = [name for name in required if name not in arrays]
    problems = ([f"no array {', '.join(map(repr, absent))} (it holds {', '.join(map(repr, arrays)) or 'none'})"]
                if absent else []) + array_problems(arrays)
    if problems:
        raise CachedFileError(f"{path}: " + "; ".join(problems) + f". {REBUILD}")
    return arrays


# glibc mallopt parameters (malloc.h) and the values of the Makefile's JOB_ENV, capped at
# the C int mallopt takes
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": (-1, 2**31 - 1), "MALLOC_TOP_PAD_": (-2, 512 << 20),
            "MALLOC_MMAP_THRESHOLD_": (-3, 2**31 - 1)}


def keep_freed_memory():
    """Make glibc keep freed memory for reuse in this process; True if it did.

    Training and evaluation allocate and free the same large buffers every step; by
    default glibc hands them back to the OS and every step page-faults them in again
    (measured here: PixMix 1.6x slower, evaluation 1.5-2x). This is what the Makefile's
    MALLOC_* variables (JOB_ENV) do, applied by the job to itself, so a plain
    `snakemake` run gets it too and nothing else on the machine does. Variables already
    set in the environment win; other C libraries are left alone.
    """
    import ctypes
    import sys
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _MALLOPT):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(parameter, value) == 1 for parameter, value in _MALLOPT.values())
