"""Work done once per test run, however many pytest-xdist workers need it: the first worker
to ask builds it under a file lock in the run's shared temporary folder, the others wait for
the lock and read what it left. Without xdist it is built in a fresh temporary folder.

    from tests.helpers.once import once_per_run
    folder, record = once_per_run(tmp_path_factory, "tiny-study", build)
    # build(folder) fills the empty folder and returns a JSON-able record of how it went

A build that raises leaves no record: the next worker to ask builds it again (and fails
the same way, with its own message).
"""
import fcntl
import json
import os
import shutil


def once_per_run(tmp_path_factory, name, build):
    """(folder, record) of build(folder), run once for the whole test run."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        return folder, build(folder)
    shared = tmp_path_factory.getbasetemp().parent  # every worker's basetemp sits in it
    folder, record = shared / name, shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on an exception
        if not record.exists():
            if folder.exists():
                shutil.rmtree(folder)  # a build that raised part way
            folder.mkdir()
            record.write_text(json.dumps(build(folder)))
    return folder, json.loads(record.read_text())
