"""The report of a real (tiny) run: every number traces back to its file, nothing is loaded
from the network, and runs with one seed, two seeds or missing sections still render with
their notes. The tests render copies of the session's shared tiny run (`tiny_study`).
"""
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from lib.data.mnist_c import CORRUPTIONS
from lib.evaluate.aggregate import write_csv_atomic
from lib.evaluate.differences import compare_study, read_tables
from lib.report import detection
from lib.report.cells import SCORE_LABELS
from lib.report.render import SECTIONS, section
from lib.report.verdicts import RULE_TEXT
from tests.helpers.report_page import (SHOWN, all_problems, check_cell, copy_run, parse_page, render_run,
                                       tiny_config, with_config)


@pytest.fixture
def run_dir(tiny_study):
    """The shared tiny run: read only, copied (copy_run) before a test changes anything."""
    return tiny_study


@pytest.fixture(scope="session")
def cfg():
    return tiny_config()


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
def test_groups_full_spectrum_and_the_score_ranking_are_shown(run_dir):
    """Near/far means beside the per-set rows (tiny: negated near by ood_groups, gaussian far),
    full-spectrum tables whose numbers an independent sklearn computation on the saved scores
    gives back, and the ranking of the scores per group; every number traces to its file."""
    from sklearn.metrics import roc_auc_score

    from lib.evaluate.scores import msp_score

    page = parse_page((run_dir / "results" / "report.html").read_text())
    assert {"full-spectrum-auroc", "full-spectrum-fpr95", "score-ranking"} <= set(page.tables)
    for table in ("detection-auroc", "study-auroc", "full-spectrum-auroc"):
        labels = page.tables[table].labels()
        assert "near-OOD mean (negated), MSP" in labels and "far-OOD mean (gaussian), MSP" in labels, labels
        rows = dict(zip(labels, page.tables[table].rows))
        # one set per group: the group mean is that set's number
        for group, ood in (("near", "negated"), ("far", "gaussian")):
            means = [c.attrs["data-value"] for c in rows[f"{group}-OOD mean ({ood}), MSP"][1:]]
            assert means == [c.attrs["data-value"] for c in rows[f"{ood}, MSP"][1:]] and "" not in means
    assert all_problems(run_dir, page) == []
    results = run_dir / "results"
    fs = pd.read_csv(results / "tables" / "full_spectrum.csv")
    with np.load(results / "logits" / "saltpepper" / "oe" / "seed1" / "id_shifted.npz") as shifted, \
            np.load(results / "scores" / "saltpepper" / "oe" / "seed1" / "gaussian" / "msp.npz") as saved:
        id_side = np.r_[saved["id_scores"], msp_score(shifted["logits"])]
        expected = roc_auc_score(np.r_[np.zeros(len(id_side)), np.ones(len(saved["ood_scores"]))],
                                 np.r_[id_side, saved["ood_scores"]])
    row = fs[(fs.augment == "saltpepper") & (fs.oe == "oe") & (fs.set == "gaussian") & (fs.score == "msp")]
    assert row.set_index("metric")["value"]["auroc"] == pytest.approx(expected)
    assert row.set_index("metric")["value"]["n_id"] == 2 * row.set_index("metric")["value"]["n_shifted"]
    ranking = page.tables["score-ranking"]
    assert sorted(ranking.labels()) == sorted(SCORE_LABELS[s] for s in tiny_config()["scores"])  # all ten
    assert [h for h in ranking.header if h.startswith("rank")] == [
        "rank, all OOD sets", "rank, near-OOD", "rank, far-OOD", "rank, full-spectrum"]
    html = (results / "report.html").read_text()
    assert "Best mean rank: " in html and "The best-ranked score (AUROC averaged over the models) is " in html


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
def test_two_seed_run_shows_std_and_tested_reading(run_dir, cfg, tmp_path):
    work = copy_run(run_dir, tmp_path)
    results = work / "results"
    tables = results / "tables"
    for name in ("accuracy.csv", "detection.csv", "calibration.csv"):
        one = pd.read_csv(tables / name, keep_default_na=False)
        two = one.copy()
        two["seed"] = 2
        # A second seed a little lower, by an amount that differs per row: a real spread.
        two["value"] = one["value"].astype(float) * (1 - 0.01 * (np.arange(len(one)) % 3 + 1))
        pd.concat([one, two]).to_csv(tables / name, index=False)
    # the second seed's per-example files: the first seed's, its scores shifted a little per model
    rng = np.random.default_rng(0)
    for kind in ("logits", "scores"):
        for first in (results / kind).glob("*/*/seed1"):
            shutil.copytree(first, first.parent / "seed2")
    for path in (results / "scores").glob("*/*/seed2/*/*.npz"):
        saved = dict(np.load(path))
        np.savez(path, id_scores=saved["id_scores"], ood_scores=saved["ood_scores"] + rng.normal(0, 0.5))
    out = compare_study(read_tables(str(tables)), str(results / "logits"), str(results / "scores"), n_boot=50)
    write_csv_atomic(out["differences"], tables / "differences.csv")
    write_csv_atomic(out["detectable"], tables / "detectable.csv")
    html = render_run(work, with_config(cfg, seeds=[1, 2]))
    page = parse_page(html)
    assert all_problems(work, page) == []
    # the per-set rows (the group means come from detection_groups.csv, not recomputed here)
    cells = page.tables["study-auroc"].per_set_cells()
    assert cells and all("±" in c.text and c.attrs["data-n"] == "2" for c in cells if c.attrs["data-value"])
    plain = html.replace("&#39;", "'")
    assert RULE_TEXT["tested"] in plain and RULE_TEXT["single"] not in plain
    assert "two-level bootstrap, 2 seeds" in plain and "points with 2 seeds" in plain
    assert 'id="differences-one-seed"' not in html


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
    cells = page.tables["study-auroc"].per_set_cells() + page.tables["study-accuracy"].rows[0][1:]
    assert all(c.published.startswith("published ") and "Δ" in c.published for c in cells)  # group means: none
    deltas = [float(c.published.split("Δ ")[1]) for c in page.tables["study-auroc"].per_set_cells()]
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
