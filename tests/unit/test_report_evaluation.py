"""lib.report.evaluation: what the report's evaluation section shows, from small CSVs."""
import base64
import os

import jinja2
import numpy as np
import pandas as pd
import pytest

from lib.report.evaluation import (calibration_table, differences_table, evaluation_section, pooled_bins,
                                   reliability_figures, score_table, set_sizes, summary_text)
from tests.helpers import ROOT


def _long(rows):
    return pd.DataFrame([dict(zip(["augment", "oe", "seed", "metric", "set", "score", "value"], r), source="f.json")
                         for r in rows])


def test_score_table_lists_the_configured_scores_with_sources():
    rows = score_table({"scores": ["xent", "mahalanobis"]})
    assert [r["name"] for r in rows] == ["xent", "mahalanobis"]
    # the sign the code uses: mean(z) - logsumexp(z), highest (-log C) for flat logits
    assert str(rows[0]["formula"]).startswith("mean<sub>c</sub>(z<sub>c</sub>) − logsumexp(z)")
    assert "Lee" in rows[1]["source"] and "training split" in rows[1]["formula"]


def test_set_sizes_flag_unequal_sets():
    det = _long([("none", "baseline", 1, "n_id", "gaussian", "msp", 360), ("none", "baseline", 1, "n_ood", "gaussian", "msp", 200),
                 ("none", "baseline", 1, "n_id", "negated", "msp", 360), ("none", "baseline", 1, "n_ood", "negated", "msp", 360)])
    sizes = {r["set"]: r for r in set_sizes(det, "detection.csv")}
    assert sizes["gaussian"]["differ"] and sizes["gaussian"]["ratio"] == "0.56"
    assert not sizes["negated"]["differ"] and sizes["negated"]["n_ood"] == 360


def test_summary_text():
    assert summary_text(0.01234, 0.001, 3, True) == "1.23 ± 0.10 (n=3)"
    assert summary_text(0.5, float("nan"), 1, False) == "0.5000 (n=1)"
    assert summary_text(float("nan"), 0.0, 0, True) == "—"


def test_calibration_table_before_and_after():
    rows = []
    for seed, ece_before, ece_after, t in ((1, 0.10, 0.02, 1.5), (2, 0.20, 0.04, 2.5)):
        rows += [("none", "baseline", seed, "ece", "id_test", "uncalibrated", ece_before),
                 ("none", "baseline", seed, "ece", "id_test", "temperature_scaled", ece_after),
                 ("none", "baseline", seed, "temperature", "id_val", "temperature_scaled", t)]
    table = calibration_table(_long(rows), "results/tables/calibration.csv")
    assert table["sets"] == ["ID test"]
    before, after = table["rows"]
    assert before["label"] == "Base, uncalibrated" and after["label"] == "Base, temperature-scaled"
    ece_col = table["columns"].index("ECE (%)")
    assert before["cells"][ece_col]["text"] == "15.00 ± 7.07 (n=2)"
    assert float(after["cells"][ece_col]["value"]) == pytest.approx(0.03)
    assert after["cells"][ece_col]["source"] == "results/tables/calibration.csv"
    assert after["temperature"]["text"] == "2.0000 ± 0.7071 (n=2)"
    assert before["cells"][0]["text"] == "—"          # no accuracy rows in this table


def _bins(seed, counts, confidences, accuracies, variant="uncalibrated", set_name="id_test"):
    rows = []
    for b, (c, conf, acc) in enumerate(zip(counts, confidences, accuracies)):
        for metric, value in (("count", c), ("mean_confidence", conf), ("accuracy", acc)):
            rows.append(dict(augment="none", oe="baseline", seed=seed, metric=metric, set=set_name, score=variant,
                             value=value, bin=b, bin_low=b / 2, bin_high=(b + 1) / 2, source="r.json"))
    return rows


def test_pooled_bins_weight_by_count():
    rel = pd.DataFrame(_bins(1, [1, 0], [0.1, np.nan], [1.0, np.nan]) + _bins(2, [3, 2], [0.2, 0.9], [0.0, 0.5]))
    pooled = pooled_bins(rel, "id_test", "uncalibrated", "none", "baseline")
    assert list(pooled["count"]) == [4, 2]
    assert pooled["mean_confidence"][0] == pytest.approx((0.1 + 3 * 0.2) / 4)
    assert pooled["accuracy"][0] == pytest.approx(0.25) and pooled["accuracy"][1] == pytest.approx(0.5)


def test_reliability_figures_are_png():
    rel = pd.DataFrame(_bins(1, [5, 5], [0.3, 0.8], [0.2, 0.9])
                       + _bins(1, [4, 6], [0.3, 0.7], [0.2, 0.8], variant="temperature_scaled"))
    (fig,) = reliability_figures(rel, "reliability.csv")
    assert fig["set"] == "id_test" and fig["source"] == "reliability.csv"
    assert base64.b64decode(fig["png"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert reliability_figures(None, "x") == []


def _difference(family="table/auroc", augment="saltpepper", oe="oe", metric="auroc", set_name="gaussian",
                score="msp", diff=0.0123, low=0.001, high=0.02, p=0.0004, p_holm=0.03, verdict="beyond noise",
                n_seeds=3, n_examples=700):
    return dict(family=family, augment=augment, oe=oe, ref_augment="none", ref_oe="baseline", metric=metric,
                set=set_name, score=score, diff=diff, low=low, high=high, p=p, p_holm=p_holm, family_size=12,
                verdict=verdict, se_seeds=0.004, se_examples=0.002, mdd=0.01, n_seeds=n_seeds, n_examples=n_examples,
                n_boot=200, method=f"two-level bootstrap, {n_seeds} seeds", source="results/scores/x.npz")


def test_differences_table_in_points_with_p_values_and_verdicts():
    diff = pd.DataFrame([
        _difference(),
        _difference(family="table/ece", augment="none", metric="ece", set_name="mnist_c", score="temperature_scaled",
                    diff=-0.05, low=-0.09, high=-0.01, p=0.2, p_holm=0.6, verdict="within noise"),
        _difference(family="summary/auroc_oe")])                   # the summary's rows are not the table's
    table = differences_table(diff, "results/tables/differences.csv")
    first, second = table["rows"]
    assert first["model"] == "S&P +OE" and first["score"] == "MSP" and first["metric"] == "AUROC"
    assert first["diff"]["text"] == "+1.23" and first["interval"]["text"] == "[+0.10, +2.00]"
    assert first["p"]["text"] == "< 0.001" and first["p_holm"]["text"] == "0.030" and first["beyond"]
    assert first["n_seeds"]["text"] == "3" and first["n_examples"]["text"] == "700"
    assert first["diff"]["key"] == ("family=table/auroc;augment=saltpepper;oe=oe;metric=auroc;set=gaussian;"
                                    "score=msp;column=diff")
    assert first["diff"]["source"] == "results/tables/differences.csv" and first["origin"] == "results/scores/x.npz"
    assert second["verdict"] == "within noise" and second["set"] == "MNIST-C, mean over corruptions"
    assert [f["name"] for f in table["families"]] == ["table/auroc", "table/ece"] and not table["one_seed"]
    assert "Banerjee" in table["method_paragraph"] and "200 times" in table["method_paragraph"]
    assert differences_table(diff.iloc[:0], "d.csv") is None      # no baseline model: no table
    one_seed = differences_table(pd.DataFrame([_difference(n_seeds=1, verdict="untested (one seed)")]), "d.csv")
    assert one_seed["one_seed"] and one_seed["rows"][0]["verdict"] == "untested (one seed)"


def test_section_renders_in_the_template(tmp_path):
    _long([("none", "baseline", 1, "ece", "id_test", "uncalibrated", 0.1),
           ("none", "baseline", 1, "temperature", "id_val", "temperature_scaled", 1.2)]).to_csv(
        tmp_path / "calibration.csv", index=False)
    pd.DataFrame([_difference(family="table/accuracy", oe="oe", augment="none", metric="accuracy", set_name="id_test",
                              score="", diff=0.01, low=0.0, high=0.02)]).to_csv(tmp_path / "differences.csv", index=False)
    pd.DataFrame([dict(metric="accuracy", set="id_test", n_seeds=3, n_comparisons=1, seed_sd=0.01, example_se=0.002,
                       mdd=0.03, floor=0.0056, alpha=0.05, power=0.8)]).to_csv(tmp_path / "detectable.csv", index=False)
    pd.DataFrame([dict(comparison="models_ood", item=item, mean_rank=rank, mean_value=0.9, k=3, n_blocks=4, chi2=6.5,
                       p=0.04, cd=1.66, alpha=0.05, blocks="a;b;c;d")
                  for item, rank in (("none/baseline", 2.75), ("none/oe", 1.25), ("pixmix/oe", 2.0))]).to_csv(
        tmp_path / "ranks.csv", index=False)
    section = evaluation_section(str(tmp_path), {"scores": ["msp", "odin"]})
    assert section["sizes"] == [] and section["reliability"] == []
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROOT, "workflow", "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("sections/evaluation.html.j2").render(evaluation=section)
    assert 'id="calibration-table"' in html and 'id="differences-table"' in html
    assert "How differences are tested." in html and "Holm families of this table" in html
    assert f'data-source="{tmp_path}/differences.csv"' in html and 'data-value="0.01"' in html
    assert 'id="differences-detectable"' in html and "3.00 points with 3 seeds" in html
    assert 'id="cd-models_ood"' in html and "Friedman test over 4 OOD sets and 3 models" in html
    assert 'src="data:image/png;base64,' in html and "CD = 1.66" in html
    assert "T = 1000, ε = 0.0014" in html and "<sub>c</sub>" in html      # formulas are markup, not escaped
