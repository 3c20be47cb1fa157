"""The report reads only the files its rule declares: the declared inputs of a config, a
section that asks for more, and the recorder that sees every read (Python's audit hooks,
tests/helpers/report_reads.py). tests/workflow/test_report_inputs.py checks the report job
of a real run against what Snakemake declares for it.
"""
import os

import pandas as pd
import pytest

from lib.report.inputs import NAMES, TABLES, benchmark_files, report_inputs
from lib.report.render import render, section
from tests.helpers import ROOT
from tests.helpers.report_page import TEMPLATE, tiny_config
from tests.helpers.report_reads import listed, recorded_files, undeclared


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
