"""tests/helpers/once.py: work the xdist workers of one test run share is built once.

    .venv/bin/python -m pytest -q tests/unit/test_once.py
"""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers.once import once_per_run


class Factory:
    """What once_per_run asks of pytest's tmp_path_factory, for a worker of a run under root."""

    def __init__(self, root, worker="gw0"):
        self.root, self.worker, self.made = root, worker, 0

    def getbasetemp(self):
        return self.root / f"popen-{self.worker}"

    def mktemp(self, name):
        self.made += 1
        folder = self.root / f"{name}{self.made}"
        folder.mkdir()
        return folder


def test_workers_asking_at_once_share_one_build(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    builds, lock = [], threading.Lock()

    def build(folder):
        with lock:
            builds.append(folder)
        time.sleep(0.2)  # long enough for the other workers to arrive while it builds
        (folder / "made").write_text("yes")
        return {"builds": len(builds)}

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda w: once_per_run(Factory(tmp_path, w), "study", build), ["gw0", "gw1", "gw2"]))
    assert builds == [tmp_path / "study"]
    assert answers == [(tmp_path / "study", {"builds": 1})] * 3
    assert (tmp_path / "study" / "made").read_text() == "yes"


def test_a_build_that_raises_is_built_again_from_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")

    def broken(folder):
        (folder / "half").write_text("")
        raise RuntimeError("the study failed")

    with pytest.raises(RuntimeError):
        once_per_run(Factory(tmp_path), "study", broken)
    folder, record = once_per_run(Factory(tmp_path), "study", lambda f: sorted(p.name for p in f.iterdir()))
    assert record == [] and folder == tmp_path / "study"


def test_without_xdist_each_call_builds_in_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    factory = Factory(tmp_path)
    first = once_per_run(factory, "study", lambda f: str(f))
    second = once_per_run(factory, "study", lambda f: str(f))
    assert first[0] != second[0] and first[1] == str(first[0])
