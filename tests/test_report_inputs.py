"""The report reads only the files its rule declares, and a changed declared file re-renders it.

The reads are recorded with Python's audit hooks (every file opened, every folder listed)
while the report job's own command line runs; the declared files come from Snakemake
(`snakemake --detailed-summary`, the report's input files and shell command). The
workflow checks run on copies of one tiny workflow run (presets/tiny.yaml, once per session).
"""
import contextlib
import json
import os
import shlex
import shutil
import sys

import pandas as pd
import pytest

from lib.report.inputs import NAMES, TABLES, benchmark_files, report_inputs
from lib.report.render import main, render, section
from tests.report_helpers import TEMPLATE, tiny_config, tiny_run
from tests.workflow import ROOT, run_snakemake

TEMPLATES = os.path.join(ROOT, "workflow", "templates")
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


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def test_the_recorder_sees_reads_and_listings_outside_the_declared_files(tmp_path):
    cfg = tiny_config()
    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    stray = results / "tables" / "stray.csv"
    stray.write_text("a\n1\n")
    inputs = report_inputs(cfg, str(results))
    declared = {os.path.abspath(p) for v in inputs.values() for p in ([v] if isinstance(v, str) else v)}

    def rogue(ctx):  # a section that opens a file without asking the context
        pd.read_csv(stray)
        os.listdir(results)
        return None
    with recorded_files() as record:
        render(cfg, inputs, TEMPLATE, str(results), repo=ROOT,
               sections=[section("rogue", "Rogue", rogue, "sections/summary.html.j2", "none")])
    assert undeclared(record, declared, [tmp_path]) == [str(stray)]
    assert listed(record, [results]) == [str(results)]


def test_a_section_may_not_ask_for_an_undeclared_file(tmp_path):
    cfg = tiny_config()
    inputs = report_inputs(cfg, str(tmp_path / "results"))
    inputs["train_logs"] = inputs["train_logs"][1:]
    with pytest.raises(ValueError, match="not among its declared inputs 'train_logs'"):
        render(cfg, inputs, TEMPLATE, str(tmp_path / "results"), repo=ROOT)


def test_inputs_name_every_table_and_list():
    cfg = tiny_config()
    inputs = report_inputs(cfg, "results")
    assert tuple(inputs) == NAMES
    assert inputs["detection"] == "results/tables/detection.csv" and inputs["leaks"] == "results/tables/leaks.json"
    assert all(isinstance(inputs[name], str) for name in TABLES)
    assert len(inputs["train_logs"]) == len(cfg["augment"]) * len(cfg["oe"]) * len(cfg["seeds"])
    # The figures draw the first seed: its logits of the ID test set and each OOD set, per model.
    assert len(inputs["logits"]) == len(cfg["augment"]) * len(cfg["oe"]) * (1 + len(cfg["ood_sets"]))
    assert inputs["data"] == [f"results/data/{n}.npz" for n in ("digits", "gaussian", "negated", "jigsaw")]
    assert inputs["mixing"] == [] and inputs["fetched"] == [] and len(inputs["corrupted"]) == 15
    study = report_inputs({**cfg, "in_distribution": "mnist", "ood_sets": ["fashion_mnist"], "augment": ["pixmix"],
                           "corruptions": "official"}, "results")
    assert study["mixing"] == ["results/data/mixing.npz"]
    assert study["fetched"] == ["results/data/fetched/mnist.json", "results/data/fetched/fashion_mnist.json",
                                "results/data/fetched/mnist_c.json"]


def test_a_benchmark_file_is_declared_while_its_job_is_to_run_or_once_it_exists(tmp_path):
    cfg = {**tiny_config(), "augment": ["none"], "oe": ["baseline"], "ood_sets": ["gaussian"]}
    results = tmp_path / "results"
    bench, model = results / "benchmarks/train/none/baseline/seed1.tsv", results / "models/none/baseline/seed1/model.pt"
    assert str(bench) in benchmark_files(cfg, str(results))         # nothing trained yet: the job writes it
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    assert str(bench) not in benchmark_files(cfg, str(results))     # trained, file gone: declared, it would retrain
    bench.parent.mkdir(parents=True)
    bench.write_text("s\n1.0\n")
    assert str(bench) in benchmark_files(cfg, str(results))


# ---- the workflow -------------------------------------------------------------------------

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
    if "Job stats:" not in result.stdout:
        return {}
    counts = {}
    for line in result.stdout.split("Job stats:")[1].splitlines()[3:]:
        words = line.split()
        if len(words) != 2 or not words[1].isdigit():
            break
        counts[words[0]] = int(words[1])
    counts.pop("total", None)
    return counts


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
