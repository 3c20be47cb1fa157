"""What a render of the report reads: every file opened and every folder listed, recorded with
Python's audit hooks, and the reads outside the files the report declares.

    with recorded_files() as record:
        render(cfg, inputs, TEMPLATE, results, repo=ROOT)
    assert undeclared(record, declared, [results]) == [] and listed(record, [results]) == []
"""
import contextlib
import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


@contextlib.contextmanager
def recorded_files():
    """{"read": [paths opened for reading], "listed": [folders listed or globbed]}, filled while
    the block runs (absolute paths)."""
    record, active = {"read": [], "listed": []}, [True]

    def hook(event, args):
        if not active[0]:
            return
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path, mode, flags = os.fsdecode(args[0]), args[1], args[2]
            writes = any(m in mode for m in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
            if not writes:
                record["read"].append(os.path.abspath(path))
        elif event in ("os.listdir", "os.scandir", "glob.glob", "glob.glob/2") and args and args[0] is not None:
            record["listed"].append(os.path.abspath(os.fsdecode(args[0])))

    sys.addaudithook(hook)  # hooks stay for the process's life: this one goes quiet after the block
    try:
        yield record
    finally:
        active[0] = False


def inside(path, roots):
    return any(os.path.commonpath([path, str(root)]) == str(root) for root in roots)


def undeclared(record, declared, roots):
    """Files read under `roots` that are not among `declared` (absolute paths). Folders are
    left out, and paths that are not there: importlib.metadata tries each folder on sys.path."""
    return sorted({p for p in record["read"] if inside(p, roots) and p not in declared and os.path.isfile(p)})


def listed(record, roots):
    """Folders listed or globbed under `roots`: the report finds no file by looking."""
    return sorted({p for p in record["listed"] if inside(p, roots)})
