"""Fault injection through the real workflow (presets/tiny.yaml, profiles/local): damaged or
deleted cached files, and command-line config the data cannot serve.

The tiny study runs once per test session (`tiny_study`, tests/workflow/conftest.py); each
test works on a copy of its folder (shutil.copytree keeps the mtimes Snakemake plans by). A fault either stops the run
before any job, or fails the jobs that read the bad file with a message naming the file
and the fix, leaving nothing computed from it. The repair each message gives (delete the
named file, rerun the same command) must give back the clean run's report, tables and
logits bit for bit; only the render date and the wall times differ (`without_run_times`).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.faults import assert_same_logits, assert_same_tables, files_under
from tests.helpers.workflow_runs import job_counts, python_env, resolved_config, run_snakemake, snakemake_command

pytestmark = pytest.mark.slow

TINY = "presets/tiny.yaml"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same sums in every run
REBUILD = "Delete it and rerun the same snakemake command"


def copy_of(study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(study, run, symlinks=True)
    return run


def snakemake(run, *args):
    done = run_snakemake(run, TINY, *args, env=ONE_THREAD)
    return done.returncode, done.stdout + done.stderr


def without_run_times(page):
    """The report less what differs between two runs of the same study: the render date and
    the wall times (benchmark files, train-log seconds and images per second)."""
    page = re.sub(r"<li>rendered [^<]*</li>", "", page)
    page = re.sub(r'<td[^>]*data-source="results/benchmarks/[^"]*"[^>]*>[^<]*</td>', "", page)
    return re.sub(r'<td[^>]*data-key="column=(?:images_per_s|seconds);[^"]*"[^>]*>[^<]*</td>', "", page)


def assert_same_as_clean(run, clean):
    assert without_run_times((run / "results/report.html").read_text()) == \
        without_run_times((clean / "results/report.html").read_text())
    assert_same_tables(run, clean)
    assert_same_logits(run, clean)


def damage_array(path, name, row, value):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays[name][row, 0] = value
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def snapshot(run, folder):
    return {name: (run / folder / name).read_bytes() for name in files_under(run / folder)}


# ---- damaged cached files ------------------------------------------------------------

FOG = "results/logits/none/baseline/seed1/mnistc_fog.npz"
ID_TEST = "results/logits/none/oe/seed1/id_test.npz"
MODEL = "results/models/saltpepper/baseline/seed1/model.pt"


def test_damaged_cached_files_fail_the_run_and_deleting_them_repairs_it(tiny_study, tmp_path):
    run = copy_of(tiny_study, tmp_path)
    damage_array(run / FOG, "logits", 0, np.nan)        # one MNIST-C logit
    damage_array(run / ID_TEST, "logits", 1, np.inf)    # one in-distribution test logit
    (run / MODEL).write_bytes(os.urandom((run / MODEL).stat().st_size))
    tables, report = snapshot(run, "results/tables"), (run / "results/report.html").read_bytes()

    code, out = snakemake(run)
    assert code != 0
    assert f"{FOG}: 'logits' holds 1 non-finite value(s) (NaN; first in row 0). {REBUILD}" in out, out
    assert f"{ID_TEST}: 'logits' holds 1 non-finite value(s) (inf; first in row 1). {REBUILD}" in out, out
    assert f"{MODEL}: damaged or truncated" in out and "pickled" not in out, out
    # Nothing was computed from them: the jobs that read them wrote nothing, no table changed.
    for gone in ("results/metrics/none/baseline/seed1/robustness.json", "results/metrics/none/baseline/seed1/calibration.json",
                 "results/metrics/none/oe/seed1/accuracy.json", "results/scores/none/oe/seed1/gaussian/msp.json",
                 "results/logits/saltpepper/baseline/seed1/id_test.npz"):
        assert not (run / gone).exists(), gone
    assert snapshot(run, "results/tables") == tables
    assert (run / "results/report.html").read_bytes() == report
    assert [f for f in files_under(run / "results") if os.path.basename(f).startswith(".tmp-")] == []

    for path in (FOG, ID_TEST, MODEL):
        (run / path).unlink()
    code, out = snakemake(run)
    assert code == 0, out
    assert_same_as_clean(run, tiny_study)
    assert (run / MODEL).read_bytes() == (tiny_study / MODEL).read_bytes()  # retrained: the same bytes


def test_truncated_data_set_is_named_and_deleting_it_rebuilds_what_depends_on_it(tiny_study, tmp_path):
    run = copy_of(tiny_study, tmp_path)
    data_set = run / "results/data/gaussian.npz"
    data_set.write_bytes(data_set.read_bytes()[:1000])
    tables = snapshot(run, "results/tables")

    code, out = snakemake(run)
    assert code != 0
    assert "results/data/gaussian.npz is damaged or truncated" in out and REBUILD in out, out
    assert files_under(run / "results/logits") == []  # every model's evaluation stopped; none half-written
    assert snapshot(run, "results/tables") == tables

    data_set.unlink()
    code, out = snakemake(run)
    assert code == 0, out
    assert_same_as_clean(run, tiny_study)


# Each kind of intermediate file, deleted: the same command plans the job that writes it and
# everything after it, up to the report (Snakemake alone would say "Nothing to be done").
DELETED = {
    "results/data/negated.npz": {"prepare_dataset", "evaluate", "score", "compare", "report"},
    "results/data/corruptions/fog.npz": {"generate_corruptions", "evaluate", "robustness_metrics", "report"},
    "results/models/none/oe/seed1/model.pt": {"train", "evaluate", "calibrate", "report"},
    "results/logits/saltpepper/oe/seed1/gaussian.npz": {"evaluate", "score", "aggregate", "compare", "report"},
    "results/scores/none/baseline/seed1/negated/energy.json": {"score", "aggregate", "compare", "report"},
    "results/metrics/saltpepper/baseline/seed1/calibration.json": {"calibrate", "aggregate_calibration", "report"},
    "results/tables/robustness_summary.csv": {"aggregate_robustness", "report"},
}


@pytest.fixture(scope="module")
def repair_plans(tiny_study, tmp_path_factory):
    started = {}
    for path in DELETED:
        run = copy_of(tiny_study, tmp_path_factory.mktemp("plan"))
        (run / path).unlink()
        cmd = snakemake_command(run, TINY, "-n")
        started[path] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return {path: (proc.communicate(timeout=600)[0], proc.returncode) for path, proc in started.items()}


@pytest.mark.parametrize("path", sorted(DELETED))
def test_a_deleted_intermediate_is_planned_again_by_the_same_command(repair_plans, path):
    out, code = repair_plans[path]
    assert code == 0 and "Nothing to be done" not in out, out
    assert DELETED[path] <= set(job_counts(out)), out
    assert job_counts(out).get("train", 0) == (1 if path.endswith("model.pt") else 0)  # no more than needed


def test_the_report_refuses_to_cite_a_missing_file(tiny_study, tmp_path):
    run = copy_of(tiny_study, tmp_path)
    (run / "results/scores/none/oe/seed1/negated/msp.json").unlink()  # cited by detection.csv
    cfg = resolved_config("config.yaml", TINY)
    done = subprocess.run([sys.executable, "-m", "lib.report", "--results", "results", "--config-json", json.dumps(cfg),
                           "--template", os.path.join(ROOT, "workflow/templates/report.html.j2"), "--repo", ROOT,
                           "--out", "results/again.html"], cwd=run, capture_output=True, text=True,
                          env=python_env())
    assert done.returncode != 0
    assert "not writing results/again.html: it would cite 1 file(s) that are missing" in done.stderr, done.stderr
    assert "results/scores/none/oe/seed1/negated/msp.json (cited by results/tables/detection.csv)" in done.stderr
    assert "Rerun the same snakemake command" in done.stderr
    assert not (run / "results/again.html").exists()


def test_every_number_in_the_report_carries_its_source_and_row(tiny_study):
    page = (tiny_study / "results/report.html").read_text()
    cells = re.findall(r"<td[^>]*\bdata-value=[^>]*>", page)
    assert len(cells) > 100
    unkeyed = [c for c in cells if not re.search(r'data-key="[^"]+"', c) or 'data-source=""' in c]
    assert unkeyed == []


# ---- config from the command line, against the data --------------------------------------

def doc_config_commands():
    """Every `snakemake ... --config ...` command of the README and docs/ (continued lines joined)."""
    commands = []
    for page in [Path(ROOT) / "README.md", *sorted((Path(ROOT) / "docs").glob("*.md"))]:
        text = page.read_text().replace("\\\n", " ")
        for block in re.findall(r"^```(?:bash|sh)?\n(.*?)^```", text, re.S | re.M):
            commands += [(page.name, line.strip()) for line in block.splitlines()
                         if re.match(r"\s*(?:\.venv/bin/)?snakemake\b", line) and " --config " in line]
    return commands


def test_the_docs_show_command_line_config():
    assert doc_config_commands(), "no `snakemake ... --config` example left in README.md or docs/"


@pytest.fixture(scope="module")
def command_line_runs(tmp_path_factory):
    """Started together (each spends seconds importing); every one ends before a job runs."""
    root = tmp_path_factory.mktemp("command_line")

    def start(name, args):
        cmd = snakemake_command(root / name, None, *args, profile=None)
        return root / name, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                              cwd=ROOT)
    tiny = ["--profile", os.path.join(ROOT, "profiles/local"), "--configfile", os.path.join(ROOT, TINY)]
    started = {f"doc:{page}:{i}": start(f"doc{i}", [*shlex.split(command.split("#")[0])[1:], "-n"])
               for i, (page, command) in enumerate(doc_config_commands())}
    started["batch_size"] = start("batch_size", [*tiny, "--config", "train={batch_size: 5000}"])
    started["bad_yaml"] = start("bad_yaml", [*tiny, "--config", "seeds=[1, 2"])
    started["missing_configfile"] = start("missing_configfile", ["--configfile", "presets/no-such-preset.yaml", "-n"])
    if not torch.cuda.is_available():
        started["cuda"] = start("cuda", [*tiny, "--config", "train={device: cuda}"])
    return {name: (run, proc.communicate(timeout=600)[0], proc.returncode) for name, (run, proc) in started.items()}


def test_the_docs_command_line_config_examples_plan_a_run(command_line_runs):
    runs = {name: result for name, result in command_line_runs.items() if name.startswith("doc:")}
    assert runs
    for name, (run, out, code) in runs.items():
        assert code == 0 and "Job stats" in out, f"{name}:\n{out}"


REFUSED = {
    "batch_size": ["config key 'train.batch_size': 5000 is larger than the training split of 'digits'",
                   "use at most 1293"],
    "bad_yaml": ["--config seeds=[1, 2: the value is not valid YAML", "quote the whole entry"],
    "cuda": ["config key 'train.device': device 'cuda' is asked for, but torch sees no GPU", "set train.device: auto"],
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_config_the_data_or_machine_cannot_serve_is_refused_before_any_job(command_line_runs, case):
    words = REFUSED[case]
    if case not in command_line_runs:
        pytest.skip("this machine has a GPU")
    run, out, code = command_line_runs[case]
    assert code != 0
    assert all(w in out for w in words), out
    assert files_under(run / "results") == []


def test_an_unknown_configfile_is_named(command_line_runs):
    # Snakemake reads --configfile before the workflow's code runs and ends in its own
    # traceback (docs/failure-modes.md); its last line names the file.
    run, out, code = command_line_runs["missing_configfile"]
    assert code != 0
    assert out.strip().splitlines()[-1] == \
        "FileNotFoundError: [Errno 2] No such file or directory: 'presets/no-such-preset.yaml'", out
    assert not run.exists()
