"""The tiny preset end to end: ten scores, calibration, differences, saved arrays, report;
score hyperparameters from the papers, or tuned on a validation OOD set."""
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.helpers.report_page import parse_page
from tests.helpers.workflow_runs import job_counts, run_snakemake

pytestmark = pytest.mark.slow

SCORES = {"msp", "xent", "energy", "maxlogit", "odin", "mahalanobis", "knn", "vim", "react", "gen"}
MODELS = [("none", "baseline"), ("none", "oe"), ("saltpepper", "baseline"), ("saltpepper", "oe")]


@pytest.fixture
def run_dir(tiny_study):
    """The shared tiny run (read only; the dry runs below write nothing under results/)."""
    return tiny_study


def _csv(run_dir, name):
    return pd.read_csv(run_dir / "results" / "tables" / name, keep_default_na=False, na_values=[""],
                       dtype={"score": str})


def test_detection_table_has_all_ten_scores(run_dir):
    det = _csv(run_dir, "detection.csv")
    assert set(det["score"]) == SCORES
    assert set(det["metric"]) == {"auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_nearest", "n_id", "n_ood"}
    counts = det.groupby(["metric", "score"]).size()
    assert (counts == len(MODELS) * 2).all()                       # 4 models x 2 OOD sets
    auroc = det[det.metric == "auroc"]["value"]
    assert auroc.between(0, 1).all()
    sizes = det[det.metric.isin(["n_id", "n_ood"])].pivot_table(index="set", columns="metric", values="value")
    assert sizes.loc["gaussian", "n_ood"] == 200 and sizes.loc["gaussian", "n_id"] == 360


def test_calibration_tables(run_dir):
    cal = _csv(run_dir, "calibration.csv")
    test = cal[cal.set == "id_test"]
    for metric in ("accuracy", "ece", "rms", "brier", "nll"):
        for variant in ("uncalibrated", "temperature_scaled"):
            assert len(test[(test.metric == metric) & (test.score == variant)]) == len(MODELS)
    temps = cal[cal.metric == "temperature"]
    assert len(temps) == len(MODELS) and (temps["value"] > 0).all()
    # the held-out NLL can only fall; the test NLL usually does too, but need not
    from lib.data.corruptions import CORRUPTIONS
    # the tiny preset generates MNIST-C: one row set per corruption and their mean
    assert set(cal["set"]) == {"id_test", "id_val", "mnist_c", "mnist_c_pooled"} | {f"mnistc_{c}" for c in CORRUPTIONS}
    rel = _csv(run_dir, "reliability.csv")
    n = rel[(rel.metric == "count") & (rel.set == "id_test")].groupby(["augment", "oe", "score"])["value"].sum()
    assert (n == 360).all() and len(n) == len(MODELS) * 2


def test_differences_bootstrap_with_one_seed(run_dir):
    diff = _csv(run_dir, "differences.csv")
    table = diff[diff.family.str.startswith("table/")]
    assert set(zip(table.augment, table.oe)) == set(MODELS) - {("none", "baseline")}
    per_model = table.groupby(["augment", "oe"]).size()
    # ID accuracy, AUROC per set x score, ID ECE x 2; MNIST-C mean accuracy, MNIST-C ECE x 2
    assert (per_model == 1 + 2 * len(SCORES) + 2 + 3).all()
    assert diff["method"].str.contains("one seed: training randomness not covered").all()
    assert (diff["verdict"] == "untested (one seed)").all() and (diff["n_seeds"] == 1).all()
    assert ((diff["low"] <= diff["diff"] + 1e-12) & (diff["diff"] <= diff["high"] + 1e-12)).all()
    assert (diff["p_holm"] >= diff["p"]).all() and diff["family_size"].min() >= 1
    acc = _csv(run_dir, "accuracy.csv")
    value = lambda a, o: acc[(acc.augment == a) & (acc.oe == o) & (acc.metric == "accuracy")]["value"].item()
    row = table[(table.augment == "saltpepper") & (table.oe == "oe") & (table.metric == "accuracy")
                & (table.set == "id_test")]
    assert row["diff"].item() == pytest.approx(value("saltpepper", "oe") - value("none", "baseline"))
    assert row["n_examples"].item() == 360
    detectable = _csv(run_dir, "detectable.csv")
    assert detectable["mdd"].isna().all() and (detectable["floor"] > 0).all()   # one seed: no seed spread
    ranks = _csv(run_dir, "ranks.csv")
    assert set(ranks["comparison"]) == {"models_ood", "scores_ood", "scores_near", "scores_far", "scores_full_spectrum",
                                        "models_mnistc"}
    # the tiny preset puts negated in the near group (ood_groups), gaussian stays far
    assert set(ranks[ranks.comparison == "scores_near"]["blocks"]) == {"negated"}
    assert set(ranks[ranks.comparison == "scores_far"]["blocks"]) == {"gaussian"}
    assert (ranks[ranks.comparison == "models_mnistc"]["n_blocks"] == 15).all()


def test_evaluate_saved_odin_logits_and_mahalanobis_fit(run_dir):
    for augment, oe in MODELS:
        folder = run_dir / "results" / "logits" / augment / oe / "seed1"
        with np.load(folder / "mahalanobis_stats.npz") as stats:
            assert stats["class_means"].shape == (10, 128) and stats["precision"].shape == (128, 128)
        for name, n in (("id_test", 360), ("id_val", 144), ("id_shifted", 360), ("gaussian", 200), ("negated", 360)):
            with np.load(folder / f"{name}.npz") as out:
                assert out["odin_logits"].shape == (n, 10) and out["features"].shape == (n, 128)


def test_report_has_the_evaluation_section(run_dir):
    html = (run_dir / "results" / "report.html").read_text()
    for anchor in ('id="score-formulas"', 'id="calibration-table"', 'id="differences-table"',
                   'id="reliability-id_test"', 'id="detection-sizes"', 'id="differences-method"'):
        assert anchor in html
    assert "data:image/png;base64," in html
    # the critical-difference diagrams: models and scores over the OOD sets, models over the corruptions
    for comparison in ("models_ood", "scores_ood", "scores_near", "scores_far", "scores_full_spectrum", "models_mnistc"):
        figure = re.search(rf'<figure id="cd-{comparison}"[^>]*><img alt="critical-difference diagram[^"]*" '
                           r'src="data:image/png;base64,([^"]+)"', html)
        assert figure, comparison
    # one seed: the page says so instead of showing seed intervals, under the tables and the differences
    assert 'id="differences-one-seed"' in html
    for block in ('id="summary-detectable"', 'id="differences-detectable"'):
        part = html[html.index(block):]
        assert "This study has one seed per model" in part[:600] and "the test images alone would hide" in part


def test_changing_scores_never_retrains(run_dir):
    fewer = run_snakemake(run_dir, "presets/tiny.yaml", "-n", config={"scores": "[msp,odin,mahalanobis]"})
    assert fewer.returncode == 0, fewer.stderr[-3000:]
    planned = job_counts(fewer.stdout)
    assert "train" not in planned and "evaluate" not in planned, planned
    without_odin = run_snakemake(run_dir, "presets/tiny.yaml", "-n", config={"scores": "[msp,xent]"})
    planned = job_counts(without_odin.stdout)
    assert "train" not in planned and planned.get("evaluate") == len(MODELS), planned


def hyperparameter_rows(html):
    """{(score, hyperparameter): (values per model, source)} of the report's hyperparameter table."""
    table = parse_page(html).tables["score-hyperparameters"]
    return {(row[0].text, row[1].text): ([c.text for c in row[2:-1]], row[-1].text) for row in table.rows}


def test_the_hyperparameter_cells_name_their_file_and_entry(run_dir):
    table = parse_page((run_dir / "results" / "report.html").read_text()).tables["score-hyperparameters"]
    knn = next(row for row in table.rows if row[0].text == "kNN")
    for c in knn[2:-1]:
        record = json.loads((run_dir / c.attrs["data-source"]).read_text())
        _, score, _, name = c.attrs["data-key"].split(".")
        assert record["scores"][score]["values"][name] == float(c.attrs["data-value"]) == float(c.text)


def test_hyperparameters_are_the_papers_without_validation_sets(run_dir):
    for augment, oe in MODELS:
        folder = run_dir / "results" / "logits" / augment / oe / "seed1"
        record = json.loads((folder / "score_hyperparameters.json").read_text())
        assert record["validation_ood_sets"] == [] and record["scores"]["knn"]["values"] == {"k": 50}
        with np.load(folder / "posthoc_stats.npz") as stats:
            assert stats["vim_residual_basis"].shape == (128, 64)     # D = 128 / 2
            assert stats["head_weight"].shape == (10, 128)
        with np.load(folder / "gaussian.npz") as out:
            assert out["knn_distance"].shape == (200,) and (out["knn_distance"] <= 2).all()
    rows = hyperparameter_rows((run_dir / "results" / "report.html").read_text())
    assert rows[("ODIN", "temperature")] == (["1000"] * len(MODELS), "paper default")
    assert rows[("kNN", "k")] == (["50"] * len(MODELS), "paper default")
    assert {source for _, source in rows.values()} == {"paper default"}


def test_a_validation_set_tunes_the_hyperparameters_and_leaves_the_test_sets_alone(run_dir, tmp_path):
    # The models too (copy_run leaves them out): only their evaluate jobs may run again. One
    # model of the tiny grid is enough to show it, and tunes in a quarter of the time.
    shutil.copytree(run_dir / "results", tmp_path / "results", ignore=shutil.ignore_patterns("checkpoints"))
    work = tmp_path
    tuned = run_snakemake(work, "presets/tiny.yaml", "--cores", "2", profile=None, env={"OMP_NUM_THREADS": "1"},
                          config={"validation_ood_sets": "[blobs]", "augment": "[none]", "oe": "[baseline]"})
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    planned = job_counts(tuned.stdout + tuned.stderr)
    assert "train" not in planned and planned.get("evaluate") == 1, planned
    for augment, oe in [("none", "baseline")]:
        folder = work / "results" / "logits" / augment / oe / "seed1"
        record = json.loads((folder / "score_hyperparameters.json").read_text())
        assert record["validation_ood_sets"] == ["blobs"]
        for score in ("odin", "knn", "vim", "react"):
            entry = record["scores"][score]
            assert entry["source"] == "tuned on blobs" and 0 <= entry["validation_auroc"] <= 1
            assert all(value in entry["grid"][key] for key, value in entry["values"].items())
        assert not (folder / "blobs.npz").exists()          # a validation set is no evaluation set
        for name in ("id_test", "gaussian"):                # the test sets' logits do not move
            with np.load(folder / f"{name}.npz") as new, np.load(run_dir / folder.relative_to(work) / f"{name}.npz") as old:
                np.testing.assert_allclose(new["logits"], old["logits"], rtol=1e-5, atol=1e-6)
    rows = hyperparameter_rows((work / "results" / "report.html").read_text())
    assert rows[("kNN", "k")][1] == "tuned on blobs" and rows[("GEN", "gamma")][1] == "paper default"
    det = pd.read_csv(work / "results" / "tables" / "detection.csv")
    assert "blobs" not in set(det["set"])
