"""Fixtures of the workflow tier, each made once and shared by the session: `tiny_study`, a
finished run of presets/tiny.yaml (`tiny_study_run`: with Snakemake's output), and
`default_study_plan`, a dry run of the default study.

    def test_reads(tiny_study):                     # read only: other tests read the same folder
        table = tiny_study / "results" / "tables" / "accuracy.csv"

    def test_changes(tiny_study, tmp_path):         # a private copy to change (mtimes kept)
        work = copy_run(tiny_study, tmp_path)       # from tests.helpers.report_page

Each is made once per test run, also when pytest-xdist splits the tests over workers
(tests/helpers/once.py). A test that writes under the shared results/ fails the session at
its end, naming the files.
"""
import subprocess

import pytest

from tests.helpers.once import once_per_run
from tests.helpers.workflow_runs import run_snakemake


def _record(result: subprocess.CompletedProcess) -> dict:
    return {"args": result.args, "returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}


def _completed(record: dict) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(record["args"], record["returncode"], record["stdout"], record["stderr"])


def _listing(folder):
    """{relative path: (size, mtime)} of every file under folder."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_study_run(tmp_path_factory):
    """(working directory, CompletedProcess) of a finished run of presets/tiny.yaml, started as a
    user types it: plain `snakemake --cores all` (the workflow's default profile only), with
    --verbose so that its log names any job handed to a Snakemake subprocess, and one OpenMP
    thread, so that a test's rerun of some jobs on a copy gives the same sums bit for bit."""
    workdir, result = once_per_run(tmp_path_factory, "tiny-study", lambda folder: _record(run_snakemake(
        folder, "presets/tiny.yaml", "--cores", "all", "--verbose", profile=None, env={"OMP_NUM_THREADS": "1"})))
    result = _completed(result)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    before = _listing(workdir / "results")
    yield workdir, result
    after = _listing(workdir / "results")
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, (f"tests changed the shared tiny study's results ({changed[:10]}); "
                         "a test that writes must work on a copy: copy_run(tiny_study, tmp_path)")


@pytest.fixture(scope="session")
def tiny_study(tiny_study_run):
    """The working directory of the shared tiny run (read only)."""
    return tiny_study_run[0]


@pytest.fixture(scope="session")
def default_study_plan(tmp_path_factory):
    """(working directory, CompletedProcess) of `snakemake -n` on the default config.yaml."""
    workdir, result = once_per_run(tmp_path_factory, "default-study-plan",
                                   lambda folder: _record(run_snakemake(folder, None, "-n")))
    return workdir, _completed(result)
