"""The report's parts on small hand-made frames: cells, readings, figures, sections, leaks,
and the checks that read a page back (tests/workflow/test_report.py renders real runs).
"""
import base64
import os

import numpy as np
import pandas as pd
import pytest

from lib.evaluate.aggregate import summarize
from lib.report.cells import fmt_cell
from lib.report.context import make_context, read_leaks
from lib.report.figures import roc_figure, score_histograms, training_figure
from lib.report.provenance import benchmark_table
from lib.report.render import SECTIONS, render_sections, section
from lib.report.summary import summary_reading
from lib.report.verdicts import RULE_TEXT, compare
from tests.helpers import ROOT
from tests.helpers.report_page import check_cell, parse_page


def long_rows(model_values, metric="accuracy", set_name="id_test", score=""):
    """A long table from {(augment, oe): [value per seed]}."""
    return pd.DataFrame([dict(augment=a, oe=o, seed=seed, metric=metric, set=set_name, score=score, value=v,
                              source="x.json")
                         for (a, o), values in model_values.items() for seed, v in enumerate(values, start=1)])


def test_fmt_cell_shows_std_only_with_more_than_one_seed():
    assert fmt_cell(0.991234, np.nan, 1) == "99.12 (n=1)"
    assert fmt_cell(0.991234, 0.0031, 3) == "99.12 ± 0.31 (n=3)"
    assert fmt_cell(1.23456, 0.1, 2, percent=False) == "1.23 ± 0.10 (n=2)"
    assert fmt_cell(np.nan, np.nan, 0) == "—"


def differences_rows(family, reference, results, metric="accuracy", set_name="id_test", score=""):
    """Rows of differences.csv in one family: {(augment, oe): (diff, verdict)} against `reference`."""
    return [dict(family=family, augment=a, oe=o, ref_augment=reference[0], ref_oe=reference[1], metric=metric,
                 set=set_name, score=score, diff=d, p_holm=0.01 if v == "beyond noise" else 0.5, verdict=v)
            for (a, o), (d, v) in results.items()]


def test_compare_reads_the_verdict_of_the_differences_step():
    diff = pd.DataFrame(differences_rows("summary/auroc_oe", ("none", "baseline"), {
        ("none", "oe"): (0.05, "beyond noise")}, "auroc", "kmnist", "msp") + differences_rows(
        "summary/auroc_oe", ("pixmix", "baseline"), {("pixmix", "oe"): (-0.03, "beyond noise")}, "auroc", "kmnist", "msp")
        + differences_rows("summary/accuracy_augment", ("none", "baseline"), {
            ("pixmix", "baseline"): (0.001, "within noise")}))
    up = compare(diff, "summary/auroc_oe", ("none", "oe"), ("none", "baseline"), metric="auroc", set="kmnist", score="msp")
    assert up["verdict"] == "higher" and up["rule"] == "tested" and up["diff"] == 0.05
    down = compare(diff, "summary/auroc_oe", ("pixmix", "oe"), ("pixmix", "baseline"), metric="auroc", set="kmnist")
    assert down["verdict"] == "lower"
    same = compare(diff, "summary/accuracy_augment", ("pixmix", "baseline"), ("none", "baseline"), metric="accuracy")
    assert same["verdict"] == "within noise"
    # a pair the family does not hold, or another family: nothing to say
    assert compare(diff, "summary/auroc_oe", ("none", "oe"), ("pixmix", "baseline"), metric="auroc") is None
    assert compare(diff, "summary/accuracy_best", ("none", "oe"), ("none", "baseline")) is None


def test_compare_with_one_seed_tests_nothing():
    diff = pd.DataFrame(differences_rows("summary/accuracy_augment", ("none", "baseline"), {
        ("pixmix", "baseline"): (0.4, "untested (one seed)")}))
    result = compare(diff, "summary/accuracy_augment", ("pixmix", "baseline"), ("none", "baseline"))
    assert result["rule"] == "single" and result["verdict"] == "untested"


def test_without_differences_csv_the_measured_difference_is_untested():
    raw = long_rows({("none", "oe"): [0.9, 0.8], ("none", "baseline"): [0.5, 0.6]})
    result = compare(None, "summary/auroc_oe", ("none", "oe"), ("none", "baseline"), raw, metric="accuracy")
    assert result["rule"] == "absent" and result["verdict"] == "untested" and result["diff"] == pytest.approx(0.3)
    assert compare(None, "summary/auroc_oe", ("pixmix", "oe"), ("none", "baseline"), raw, metric="accuracy") is None


def _reading_inputs():
    cfg = {"in_distribution": "mnist", "augment": ["none", "pixmix"], "oe": ["baseline", "oe"],
           "ood_sets": ["kmnist"], "scores": ["msp"]}
    acc_raw = long_rows({("none", "baseline"): [0.95, 0.951, 0.949], ("none", "oe"): [0.952, 0.95, 0.948],
                         ("pixmix", "baseline"): [0.90, 0.91, 0.905], ("pixmix", "oe"): [0.99, 0.991, 0.992]})
    det_raw = long_rows({("none", "baseline"): [0.90, 0.91, 0.92], ("none", "oe"): [0.99, 0.995, 0.991],
                         ("pixmix", "baseline"): [0.93, 0.92, 0.94], ("pixmix", "oe"): [0.96, 0.97, 0.98]},
                        metric="auroc", set_name="kmnist", score="msp")
    return cfg, {"raw": acc_raw, "summary": summarize(acc_raw)}, {"raw": det_raw, "summary": summarize(det_raw)}


def test_reading_names_the_winner_and_states_the_verdicts_of_differences_csv():
    cfg, acc, det = _reading_inputs()
    auroc = dict(metric="auroc", set_name="kmnist", score="msp")
    diff = pd.DataFrame(
        differences_rows("summary/accuracy_best", ("pixmix", "oe"), {
            ("none", "baseline"): (-0.04, "beyond noise"), ("none", "oe"): (-0.04, "within noise"),
            ("pixmix", "baseline"): (-0.08, "beyond noise")})
        + differences_rows("summary/auroc_best", ("none", "oe"), {
            ("none", "baseline"): (-0.08, "beyond noise"), ("pixmix", "baseline"): (-0.06, "beyond noise"),
            ("pixmix", "oe"): (-0.02, "within noise")}, **auroc)
        + differences_rows("summary/auroc_oe", ("none", "baseline"), {("none", "oe"): (0.08, "beyond noise")}, **auroc)
        + differences_rows("summary/auroc_oe", ("pixmix", "baseline"), {("pixmix", "oe"): (0.04, "within noise")}, **auroc)
        + differences_rows("summary/accuracy_augment", ("none", "baseline"), {
            ("pixmix", "baseline"): (-0.045, "beyond noise")}))
    reading = summary_reading(cfg, acc, det, diff=diff)
    text = " ".join(reading["sentences"])
    assert "PixMix +OE is the most accurate (99.10%)" in text and "PixMix the least" in text
    assert "within noise of the best: Base +OE." in text
    assert "on kmnist by Base +OE (99.20%, tied within noise with PixMix +OE)" in text
    assert "with OE for Base (beyond noise up on 1, down on 0 of 1 sets)" in text
    assert "with OE for PixMix (beyond noise up on 0, down on 0 of 1 sets)" in text
    assert "-4.50 points for PixMix (beyond noise)" in text
    assert reading["rules"] == [RULE_TEXT["tested"]] and "Holm-adjusted" in reading["rules"][0]


def test_reading_without_differences_csv_tests_nothing():
    cfg, acc, det = _reading_inputs()
    reading = summary_reading(cfg, acc, det)
    text = " ".join(reading["sentences"])
    assert "PixMix +OE is the most accurate (99.10%)" in text and "noise" not in text
    assert "changes by +8.20 points with OE for Base" in text
    assert reading["rules"] == [RULE_TEXT["absent"]]


def test_benchmark_table_sums_wall_time_per_rule(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = []
    for rule, name, s, cpu in (("train", "a/seed1.tsv", 10.0, 8.0), ("train", "b/seed1.tsv", 30.0, 20.0),
                               ("data", "x.tsv", 2.5, 1.0)):
        path = tmp_path / "results" / "benchmarks" / rule / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{s}\t0:00:10\t1\t1\t1\t1\t0\t0\t0\t{cpu}\n")
        files.append(str(path))
    ctx = make_context({}, {"benchmarks": files}, tmp_path / "results")
    rows = {r["rule"]: [float(c["value"]) for c in r["cells"]] for r in benchmark_table(ctx)}
    assert rows == {"data": [1, 2.5, 2.5, 2.5, 1.0], "train": [2, 40.0, 20.0, 30.0, 28.0]}


def test_figures_are_png_data_uris():
    rng = np.random.default_rng(0)
    pair = (rng.normal(0, 1, 50), rng.normal(1, 1, 40))
    log = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "train_accuracy": [0.6, 0.8]})
    for uri in (roc_figure({"a": {"m1": pair, "m2": pair}, "b": {"m1": pair}}, "MSP"),
                score_histograms({"m1": pair, "m2": (np.zeros(5), np.zeros(5))}, "a", "MSP"),
                training_figure({"m1 seed 1": log, "m1 seed 2": log})):
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_sections_are_one_list_in_the_order_of_the_page():
    assert [s["id"] for s in SECTIONS] == ["summary", "published_oe", "robustness", "detection", "evaluation", "training",
                                           "augment_samples", "provenance"]
    assert [s["title"] for s in SECTIONS][:4] == ["Summary: the study's two tables",
                                                 "Against the Outlier Exposure paper (MNIST)", "Robustness",
                                                 "OOD detection"]


def test_every_section_has_its_partial_a_builder_and_a_note():
    templates = os.path.join(ROOT, "workflow", "templates")
    for s in SECTIONS:
        assert s["template"] == f"sections/{s['id']}.html.j2", s["id"]
        assert os.path.isfile(os.path.join(templates, s["template"])), s["template"]
        assert callable(s["build"]) and s["missing"], s["id"]
    partials = sorted(os.listdir(os.path.join(templates, "sections")))
    assert partials == sorted(os.path.basename(s["template"]) for s in SECTIONS)  # no partial left unused


def test_every_section_builder_of_the_package_is_on_the_page():
    """A module of lib/report with a build(ctx) is a section: it must be in SECTIONS, once."""
    import importlib
    import pkgutil

    import lib.report
    modules = [importlib.import_module(f"lib.report.{m.name}") for m in pkgutil.iter_modules(lib.report.__path__)
               if m.name != "__main__"]
    assert {m.__name__ for m in modules if hasattr(m, "build")} == {s["build"].__module__ for s in SECTIONS}
    assert len({s["id"] for s in SECTIONS}) == len({s["build"] for s in SECTIONS}) == len(SECTIONS)


def test_section_templates_see_their_data_by_id_and_may_write_their_heading():
    import jinja2
    env = jinja2.Environment(loader=jinja2.DictLoader({
        "own.html.j2": "<h2 id='extra'>{{ extra.title }} for {{ cfg.name }}</h2>{{ data.title }}",
        "plain.html.j2": "<p>{{ section_id }}: {{ data }}</p>"}), autoescape=True,
        undefined=jinja2.StrictUndefined)
    built = [{**section("extra", "Extra", None, "own.html.j2", "n/a", heading=False), "data": {"title": "T"}},
             {**section("cfg", "Named like a common variable", None, "plain.html.j2", "n/a"), "data": 3},
             {**section("gone", "Absent", None, "plain.html.j2", "not here"), "data": None}]
    html = [s["html"] for s in render_sections(env, built, {"cfg": {"name": "run"}})]
    assert html == ["<h2 id='extra'>T for run</h2>T", "<p>cfg: 3</p>", ""]


def test_cells_without_a_key_are_checked_against_the_whole_file(tmp_path):
    from tests.helpers.report_page import Cell
    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    long_rows({("none", "baseline"): [0.97, 0.95]}).to_csv(tables / "robustness.csv", index=False)

    def cell(value, text):
        c = Cell("td", [("data-value", value), ("data-source", "results/tables/robustness.csv")])
        c.text = text
        return c
    assert check_cell(tmp_path, cell(repr(0.96), "96.00 ± 1.41 †")) is None
    assert check_cell(tmp_path, cell(repr(0.96), "0.96")) is None
    assert check_cell(tmp_path, cell(repr(0.95), "95.00")) is None          # a seed's own value
    assert check_cell(tmp_path, cell(f"{0.95!r},{0.97!r}", "[95.0, 97.0]")) is None
    assert "not a number of the file" in check_cell(tmp_path, cell(repr(0.955), "95.50"))
    assert "not what the cell shows" in check_cell(tmp_path, cell(repr(0.96), "97.00"))


def test_leaks_come_from_leaks_json_else_from_the_config(tmp_path):
    cfg = {"augment": ["none"], "oe": ["baseline", "oe"], "ood_sets": ["gaussian", "fashion_mnist"],
           "outlier_exposure": {"source": "fashion_mnist"}}
    assert list(read_leaks(str(tmp_path / "leaks.json"), cfg)) == ["fashion_mnist"]
    assert read_leaks(str(tmp_path / "leaks.json"), {**cfg, "oe": ["baseline"]}) == {}
    (tmp_path / "leaks.json").write_text('{"seen_in_training": {"gaussian": "why"}}')
    assert read_leaks(str(tmp_path / "leaks.json"), cfg) == {"gaussian": "why"}


def test_page_parser_rejects_unbalanced_tags():
    with pytest.raises(ValueError, match="closes"):
        parse_page("<table><tr><td>1</tr></table>")
    with pytest.raises(ValueError, match="unclosed"):
        parse_page("<div><p>x</p>")
