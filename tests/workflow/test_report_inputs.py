"""The report job of a real run reads only the files its rule declares (`snakemake
--detailed-summary`: the report's input files and shell command), every benchmark file is one
of them, and a changed declared file re-renders it. The checks run on the session's shared
tiny run (`tiny_study`), or a copy where a file changes.
"""
import json
import os
import shlex
import shutil

import pytest

from lib.report.inputs import NAMES, report_inputs
from lib.report.render import main
from tests.helpers import ROOT
from tests.helpers.report_page import tiny_config
from tests.helpers.report_reads import listed, recorded_files, undeclared
from tests.helpers.workflow_runs import job_counts, run_snakemake

TEMPLATES = os.path.join(ROOT, "workflow", "templates")


def report_job(workdir):
    """(declared input files as absolute paths, shell command) of results/report.html, from Snakemake."""
    result = run_snakemake(workdir, "presets/tiny.yaml", "--detailed-summary")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    header = next(fields for fields in lines if fields[0] == "output_file")
    row = dict(zip(header, next(fields for fields in lines if fields[0] == "results/report.html")))
    files = {os.path.abspath(os.path.join(workdir, p)) for p in row["input-file(s)"].split(",")}
    return files, row["shellcmd"]


def report_arguments(command):
    """The arguments of `python -m lib.report` in the rule's shell command."""
    words = shlex.split(command)
    start = words.index("lib.report") + 1
    return words[start:words.index(">")]


@pytest.fixture
def run_dir(tiny_study):
    """The shared tiny run (read only: the report job below writes its page elsewhere)."""
    return tiny_study


slow = pytest.mark.slow


@slow
def test_the_report_reads_only_what_its_rule_declares(run_dir, tmp_path, monkeypatch):
    declared, command = report_job(run_dir)
    arguments = report_arguments(command)
    out = arguments.index("--out") + 1
    arguments[out] = str(tmp_path / "report.html")  # the session's run keeps its own report
    monkeypatch.chdir(run_dir)
    with recorded_files() as record:
        main(arguments)
    assert undeclared(record, declared, [run_dir, TEMPLATES]) == []
    assert listed(record, [run_dir / "results", TEMPLATES]) == []
    # The check saw the report at work: every kind of declared file was read.
    read = set(record["read"])
    inputs = json.loads(arguments[arguments.index("--inputs-json") + 1])
    for name in NAMES:
        files = [inputs[name]] if isinstance(inputs[name], str) else inputs[name]
        if files:
            assert {os.path.abspath(f) for f in files} & read, f"no file of the report input {name!r} was read"
    assert os.path.join(TEMPLATES, "sections", "summary.html.j2") in read


@slow
def test_every_benchmark_file_of_the_run_is_a_report_input(run_dir):
    inputs = report_inputs(tiny_config(), str(run_dir / "results"))
    written = {str(p) for rule in ("data", "train", "evaluate") for p in (run_dir / "results" / "benchmarks" / rule).rglob("*.tsv")}
    assert written and written == set(inputs["benchmarks"])


def planned(workdir):
    """{rule: jobs} of a dry run in `workdir`."""
    result = run_snakemake(workdir, "presets/tiny.yaml", "-n")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return job_counts(result.stdout)


@slow
def test_a_changed_declared_file_renders_the_report_again(run_dir, tmp_path):
    """A table and a benchmark file, each changed on its own, plan the report and nothing else.

    Changed in content: Snakemake 9 compares the checksums of small files it wrote, so a
    bare `touch` plans nothing."""
    work = tmp_path / "run"
    shutil.copytree(run_dir, work, symlinks=True)
    assert planned(work) == {}
    for name in ("results/tables/robustness_summary.csv", "results/benchmarks/train/none/baseline/seed1.tsv"):
        path = work / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert planned(work) == {"report": 1, "all": 1}, name
        path.write_bytes(original)
