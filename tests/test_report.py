"""The report: every number traces back to its file, nothing is loaded from the network,
and runs with one seed, two seeds or missing sections still render with their notes.

Unit tests use small hand-made frames; the rest render copies of one tiny workflow run
(presets/tiny.yaml, once per session).
"""
import base64
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from lib.data.mnist_c import CORRUPTIONS
from lib.evaluate.aggregate import summarize
from lib.report import detection
from lib.report.cells import fmt_cell
from lib.report.context import make_context, read_leaks
from lib.report.figures import roc_figure, score_histograms, training_figure
from lib.report.provenance import benchmark_table
from lib.report.render import SECTIONS, render_sections, section
from lib.report.summary import summary_reading
from lib.report.verdicts import RULE_TEXT, compare
from tests.workflow import ROOT
from tests.report_helpers import (SHOWN, all_problems, check_cell, copy_run, parse_page, render_run,
                                  tiny_config, tiny_run, with_config)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="session")
def cfg():
    return tiny_config()


def long_rows(model_values, metric="accuracy", set_name="id_test", score=""):
    """A long table from {(augment, oe): [value per seed]}."""
    return pd.DataFrame([dict(augment=a, oe=o, seed=seed, metric=metric, set=set_name, score=score, value=v,
                              source="x.json")
                         for (a, o), values in model_values.items() for seed, v in enumerate(values, start=1)])


# ---- unit tests ---------------------------------------------------------------------------


def test_fmt_cell_shows_std_only_with_more_than_one_seed():
    assert fmt_cell(0.991234, np.nan, 1) == "99.12 (n=1)"
    assert fmt_cell(0.991234, 0.0031, 3) == "99.12 ± 0.31 (n=3)"
    assert fmt_cell(1.23456, 0.1, 2, percent=False) == "1.23 ± 0.10 (n=2)"
    assert fmt_cell(np.nan, np.nan, 0) == "—"


def test_compare_uses_the_paired_interval_when_seeds_pair():
    raw = long_rows({("none", "oe"): [0.90, 0.91, 0.92], ("none", "baseline"): [0.80, 0.815, 0.82]})
    result = compare(raw, ("none", "oe"), ("none", "baseline"), metric="accuracy")
    assert result["rule"] == "paired" and result["verdict"] == "higher" and result["n"] == 3
    assert result["diff"] == pytest.approx((0.10 + 0.095 + 0.10) / 3)
    flipped = compare(raw, ("none", "baseline"), ("none", "oe"), metric="accuracy")
    assert flipped["verdict"] == "lower"


def test_compare_calls_inconsistent_differences_noise():
    raw = long_rows({("none", "oe"): [0.90, 0.80, 0.95], ("none", "baseline"): [0.85, 0.88, 0.86]})
    assert compare(raw, ("none", "oe"), ("none", "baseline"), metric="accuracy")["verdict"] == "within noise"


def test_compare_without_paired_seeds_uses_mean_std_overlap():
    raw = long_rows({("none", "oe"): [0.90, 0.91], ("none", "baseline"): [0.5, 0.6]})
    raw.loc[raw["oe"] == "baseline", "seed"] += 10  # no seed in common
    result = compare(raw, ("none", "oe"), ("none", "baseline"), metric="accuracy")
    assert result["rule"] == "overlap" and result["verdict"] == "higher"
    close = long_rows({("none", "oe"): [0.90, 0.92], ("none", "baseline"): [0.89, 0.91]})
    close.loc[close["oe"] == "baseline", "seed"] += 10
    assert compare(close, ("none", "oe"), ("none", "baseline"), metric="accuracy")["verdict"] == "within noise"


def test_compare_with_one_seed_tests_nothing():
    raw = long_rows({("none", "oe"): [0.9], ("none", "baseline"): [0.5]})
    result = compare(raw, ("none", "oe"), ("none", "baseline"), metric="accuracy")
    assert result["rule"] == "single" and result["verdict"] == "untested"
    assert compare(raw, ("pixmix", "oe"), ("none", "baseline"), metric="accuracy") is None


def test_reading_names_the_winner_and_the_rule():
    cfg = {"in_distribution": "mnist", "augment": ["none", "pixmix"], "oe": ["baseline", "oe"],
           "ood_sets": ["kmnist"], "scores": ["msp"]}
    acc_raw = long_rows({("none", "baseline"): [0.95, 0.951, 0.949], ("none", "oe"): [0.952, 0.95, 0.948],
                         ("pixmix", "baseline"): [0.90, 0.91, 0.905], ("pixmix", "oe"): [0.99, 0.991, 0.992]})
    det_raw = long_rows({("none", "baseline"): [0.90, 0.91, 0.92], ("none", "oe"): [0.99, 0.995, 0.991],
                         ("pixmix", "baseline"): [0.93, 0.92, 0.94], ("pixmix", "oe"): [0.96, 0.97, 0.98]},
                        metric="auroc", set_name="kmnist", score="msp")
    reading = summary_reading(cfg, {"raw": acc_raw, "summary": summarize(acc_raw)},
                                     {"raw": det_raw, "summary": summarize(det_raw)})
    text = " ".join(reading["sentences"])
    assert "PixMix +OE is the most accurate (99.10%)" in text
    assert "PixMix the least" in text
    assert "on kmnist by Base +OE (99.20%" in text
    assert "beyond noise up on 1, down on 0 of 1 sets" in text
    assert len(reading["rules"]) == 1 and "paired t interval" in reading["rules"][0]


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
    assert [s["id"] for s in SECTIONS] == ["summary", "robustness", "detection", "evaluation", "training",
                                           "augment_samples", "provenance"]
    assert [s["title"] for s in SECTIONS][:3] == ["Summary: the study's two tables", "Robustness", "OOD detection"]


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
    from tests.report_helpers import Cell
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


# ---- the report of a real (tiny) run ----------------------------------------------------------

slow = pytest.mark.slow


@slow
def test_every_number_traces_back_to_its_file(run_dir):
    """The report the workflow itself wrote: each cell equals the CSV/log/benchmark it names."""
    page = parse_page((run_dir / "results" / "report.html").read_text())
    expected_tables = {"study-accuracy", "study-auroc", "detection-auroc", "detection-aupr_in",
                       "detection-aupr_out", "detection-fpr95", "training-table", "benchmarks", "checksums"}
    assert expected_tables <= set(page.tables)
    cells = [c for t in page.tables.values() for c in t.number_cells()]
    assert len(cells) > 80
    assert all_problems(run_dir, page) == []
    detection = pd.read_csv(run_dir / "results" / "tables" / "detection.csv")
    shown_keys = {c.attrs["data-key"] for c in page.tables["detection-auroc"].number_cells()}
    for _, r in detection[detection["metric"] == "auroc"].iterrows():
        assert f"augment={r.augment};oe={r.oe};metric=auroc;set={r.set};score={r.score}" in shown_keys
    # A number shown in a table but not traceable would slip past the checks above.
    for table in page.tables.values():
        for row in table.rows:
            for c in row:
                if c.tag == "td" and SHOWN.match(c.text):
                    assert "data-value" in c.attrs, (table.id, c.text)


@slow
def test_the_check_catches_a_wrong_number(run_dir):
    page = parse_page((run_dir / "results" / "report.html").read_text())
    c = page.tables["detection-auroc"].number_cells()[0]
    assert check_cell(run_dir, c) is None
    c.attrs["data-value"] = repr(float(c.attrs["data-value"]) + 1e-9)
    assert "data-value" in check_cell(run_dir, c)
    c = page.tables["training-table"].number_cells()[1]
    c.text = "9" + c.text
    assert "shown text" in check_cell(run_dir, c)


@slow
def test_no_resource_comes_from_the_network(run_dir):
    html = (run_dir / "results" / "report.html").read_text()
    page = parse_page(html)
    external = [u for u in page.urls if not (u[2].startswith("#") or u[2].startswith("data:"))]
    assert external == []
    assert all(tag == "img" for tag, _, url in page.urls if url.startswith("data:"))
    css = " ".join(page.styles)
    assert "url(" not in css and "@import" not in css
    assert not re.search(r"https?://", " ".join(page.scripts))
    assert not re.search(r"<(link|iframe|object|embed|audio|video)\b", html)


@slow
def test_one_seed_run_renders_with_its_notes(run_dir, cfg):
    page_html = (run_dir / "results" / "report.html").read_text()
    page = parse_page(page_html)
    assert page.sections == [s["id"] for s in SECTIONS]
    assert RULE_TEXT["single"] in page_html.replace("&#39;", "'")
    for cell in page.tables["study-auroc"].number_cells():
        assert "±" not in cell.text and cell.attrs["data-n"] == "1"
    tables = run_dir / "results" / "tables"
    for name in ("robustness.csv", "calibration.csv"):
        if not (tables / name).exists():  # optional: present once those rules are in the workflow
            assert f"results/tables/{name} is absent" in page_html
    assert 'alt="ROC curves of the MSP score' in page_html
    assert "hardest OOD set" in page_html


@slow
def test_sets_seen_in_training_are_marked(run_dir, cfg, tmp_path):
    work = copy_run(run_dir, tmp_path)
    (work / "results" / "tables" / "leaks.json").write_text(
        '{"seen_in_training": {"negated": "shares its source (digits) with the test"}}')
    html = render_run(work, cfg)
    page = parse_page(html)
    labels = [row[0].text for row in page.tables["study-auroc"].rows]
    assert "negated †, MSP" in labels and "gaussian, MSP" in labels
    assert [row[0].text for row in page.tables["detection-fpr95"].rows].count("negated †, MSP") == 1
    note = "† seen in training: negated shares its source (digits) with the test."
    # Every cell that names the set, in built-in and plug-in tables alike, carries the mark ...
    named = [c.text for t in page.tables.values() for row in t.rows for c in row if re.match(r"negated\b", c.text)]
    assert len(named) > 8 and all(text.startswith("negated †") for text in named)
    # ... and every section that shows the mark explains it: the study, detection and evaluation sections.
    marked = [part for part in html.split("<section data-section=")[1:] if "negated †" in part]
    assert len(marked) == 3 and all(note in part for part in marked)
    assert html.count(note) == 3
    assert all_problems(work, page) == []


@slow
def test_two_seed_run_shows_std_and_paired_reading(run_dir, cfg, tmp_path):
    work = copy_run(run_dir, tmp_path)
    tables = work / "results" / "tables"
    for name in ("accuracy.csv", "detection.csv"):
        one = pd.read_csv(tables / name, keep_default_na=False)
        two = one.copy()
        two["seed"] = 2
        # A second seed a little lower, by an amount that differs per row: a real spread.
        two["value"] = one["value"].astype(float) * (1 - 0.01 * (np.arange(len(one)) % 3 + 1))
        pd.concat([one, two]).to_csv(tables / name, index=False)
    html = render_run(work, with_config(cfg, seeds=[1, 2]))
    page = parse_page(html)
    assert all_problems(work, page) == []
    cells = page.tables["study-auroc"].number_cells()
    assert all("±" in c.text and c.attrs["data-n"] == "2" for c in cells if c.attrs["data-value"])
    assert "paired t interval" in html
    assert RULE_TEXT["single"] not in html.replace("&#39;", "'")


@slow
def test_missing_inputs_give_notes_not_errors(run_dir, cfg, tmp_path):
    work = copy_run(run_dir, tmp_path)
    for folder in ("logits", "benchmarks", "data", "models"):
        shutil.rmtree(work / "results" / folder)
    html = render_run(work, cfg)
    page = parse_page(html)
    assert all_problems(work, page) == []
    assert "No figures: the cached logits" in html
    assert "No Snakemake benchmark files" in html
    assert "No prepared data sets" in html
    assert "no model of this grid has finished training" in html
    assert {"study-auroc", "detection-auroc"} <= set(page.tables)
    assert "training-table" not in page.tables
    os.remove(work / "results" / "tables" / "detection.csv")
    html = render_run(work, cfg)
    assert "results/tables/detection.csv is absent: run the aggregate rule." in html
    assert parse_page(html).sections == [s["id"] for s in SECTIONS]


@slow
def test_optional_tables_fill_their_sections(run_dir, cfg, tmp_path):
    """robustness.csv, robustness_summary.csv and calibration.csv, when present, fill the
    robustness section, the study's MNIST-C row and the calibration table."""
    work = copy_run(run_dir, tmp_path)
    tables = work / "results" / "tables"
    models = [(a, o) for a in cfg["augment"] for o in cfg["oe"]]
    rng = np.random.default_rng(1)

    def write(name, metrics, sets, scores=("",)):
        rows = [dict(augment=a, oe=o, seed=s, metric=m, set=st, score=sc, value=float(rng.uniform(0.5, 1)),
                     source=f"results/robustness/{a}/{o}/seed{s}.json")
                for a, o in models for s in (1, 2) for m in metrics for st in sets for sc in scores]
        pd.DataFrame(rows).to_csv(tables / name, index=False)

    write("robustness.csv", ["accuracy"], ["shot_noise", "impulse_noise", "rotate", "fog"])
    write("robustness_summary.csv", ["mean_accuracy", "mce"], ["mnist_c"])
    write("calibration.csv", ["ece", "brier"], ["id_test"], scores=("uncalibrated", "temperature_scaled"))
    html = render_run(work, cfg)
    page = parse_page(html)
    assert {"robustness-table", "calibration-table"} <= set(page.tables)
    assert page.tables["robustness-table"].header[1:] == ["Base", "Base +OE", "S&P", "S&P +OE"]
    filled = {r[0].text for r in page.tables["robustness-table"].rows if all(c.attrs["data-value"] for c in r[1:])}
    assert filled & set(CORRUPTIONS) == {"shot_noise", "impulse_noise", "rotate", "fog"}
    calibration = page.tables["calibration-table"].number_cells()
    assert any(c.attrs["data-value"] and c.attrs["data-source"] == "results/tables/calibration.csv" for c in calibration)
    mnist_c_row = page.tables["study-accuracy"].rows[1]
    assert all(c.attrs["data-source"] == "results/tables/robustness_summary.csv" for c in mnist_c_row[1:])
    assert all_problems(work, page) == []
    assert "is absent" not in html.split('id="detection"')[0].split('id="robustness"')[1]


@slow
def test_published_numbers_and_deltas_on_mnist(run_dir, cfg, tmp_path):
    """A run on MNIST shows the study's numbers and ours minus theirs beside each cell."""
    work = copy_run(run_dir, tmp_path)
    path = work / "results" / "tables" / "detection.csv"
    det = pd.read_csv(path, keep_default_na=False)
    det["set"] = det["set"].map({"gaussian": "fashion_mnist", "negated": "kmnist"})
    det.to_csv(path, index=False)
    # The report reads the benchmark files of its config's data sets: name them as an MNIST run does.
    bench = work / "results" / "benchmarks" / "data"
    for ours, theirs in (("digits", "mnist"), ("gaussian", "fashion_mnist"), ("negated", "kmnist")):
        (bench / f"{ours}.tsv").rename(bench / f"{theirs}.tsv")
    mnist = with_config(cfg, in_distribution="mnist", ood_sets=["fashion_mnist", "kmnist"])
    html = render_run(work, mnist)
    page = parse_page(html)
    cells = page.tables["study-auroc"].number_cells() + page.tables["study-accuracy"].rows[0][1:]
    assert all(c.published.startswith("published ") and "Δ" in c.published for c in cells)
    deltas = [float(c.published.split("Δ ")[1]) for c in page.tables["study-auroc"].number_cells()]
    assert "Against the published study, ours differ on average by" in html
    assert f"{sum(deltas) / len(deltas):+.2f} points in AUROC ({len(deltas)} cells)" in html
    assert all_problems(work, page) == []


@slow
def test_render_shows_the_sections_it_is_given(run_dir, cfg, tmp_path):
    work = copy_run(run_dir, tmp_path)
    extra = [section("nothing", "A section without data", lambda ctx: None, "sections/detection.html.j2",
                     "This run has no such data."),
             section("again", "The detection tables again", detection.build, "sections/detection.html.j2", "unused")]
    html = render_run(work, cfg, sections=extra)
    page = parse_page(html)
    assert page.sections == ["nothing", "again"]
    assert "This run has no such data." in html
    assert {"detection-auroc", "detection-fpr95"} <= set(page.tables) and "detection-n_id" not in page.tables
    assert all_problems(work, page) == []
