"""The summary opens with the broken-baseline warning, before any reading of gains, when the
Base model is no sound baseline (lib/evaluate/baseline_check.py), and says how much of each
gain over Base is Base recovering; with a sound Base model it says nothing of the kind."""
import os

import jinja2
import pandas as pd
import pytest

from lib.config import validate_config
from lib.report import summary
from lib.report.context import make_context
from lib.report.inputs import report_inputs
from tests.helpers import ROOT

MODELS = [("none", "baseline"), ("none", "oe"), ("pixmix", "baseline"), ("pixmix", "oe")]


def write_tables(results, base_noise_auroc, base_mnist_c):
    """accuracy, detection and robustness_summary tables of a 2 x 2 grid, two seeds."""
    tables = os.path.join(results, "tables")
    os.makedirs(tables)
    rows = {"accuracy": [], "detection": [], "robustness_summary": []}
    for augment, oe in MODELS:
        base = (augment, oe) == ("none", "baseline")
        for seed, wobble in ((1, -0.002), (2, 0.002)):
            model = dict(augment=augment, oe=oe, seed=seed, source="x.json")
            rows["accuracy"].append(dict(model, metric="accuracy", set="id_test", score="", value=0.98 + wobble))
            for ood, healthy in (("gaussian", 0.999), ("bernoulli", 0.998), ("fashion_mnist", 0.97)):
                value = base_noise_auroc if base and ood != "fashion_mnist" else healthy
                rows["detection"].append(dict(model, metric="auroc", set=ood, score="msp", value=value + wobble))
            rows["robustness_summary"].append(dict(model, metric="mean_accuracy", set="mnist_c", score="",
                                                   value=(base_mnist_c if base else 0.90) + wobble))
    for name, table in rows.items():
        pd.DataFrame(table).to_csv(os.path.join(tables, f"{name}.csv"), index=False)


def build(tmp_path, base_noise_auroc, base_mnist_c, model="convnet", augment_outliers=True):
    cfg = validate_config({"in_distribution": "mnist", "augment": ["none", "pixmix"], "oe": ["baseline", "oe"],
                           "seeds": [1, 2], "ood_sets": ["gaussian", "bernoulli", "fashion_mnist"],
                           "scores": ["msp"], "train": {"model": model},
                           "outlier_exposure": {"augment_outliers": augment_outliers}})
    results = str(tmp_path / "results")
    write_tables(results, base_noise_auroc, base_mnist_c)
    ctx = make_context(cfg, report_inputs(cfg, results), results)
    ctx["leaks"] = {}
    data = summary.build(ctx)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROOT, "workflow", "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("sections/summary.html.j2").render(cfg=cfg, leaks={}, leak_mark="†", data=data,
                                                                section_id="summary")
    return data, html


def test_a_failed_base_model_opens_the_summary_with_the_warning(tmp_path):
    data, html = build(tmp_path, base_noise_auroc=0.30, base_mnist_c=0.62)
    sentences = data["baseline_warning"]["sentences"]
    assert sentences[0].startswith("Warning: the Base model is not a sound baseline")
    assert "30.0% on gaussian noise" in sentences[0] and "MNIST-C" in sentences[0]
    assert "batch normalisation" in sentences[1] and "oe_convnet" in sentences[2]
    gaussian = next(s for s in sentences if "on gaussian (MSP AUROC)" in s)
    # +OE: 0.999 - 0.30 = +69.90 points, of which 0.9996 - 0.30 = 69.96 would be recovery: all of it
    assert "sound baseline's 99.96%: Base +OE +69.90 points (69.90)" in gaussian
    mnist_c = next(s for s in sentences if "on MNIST-C mean accuracy" in s)
    # PixMix: 0.90 - 0.62 = +28 points; a sound baseline sits at 0.98 - 0.13 = 0.85: 23 of them recovery
    assert "sound baseline's 85.00%" in mnist_c and "PixMix +28.00 points (23.00)" in mnist_c
    assert html.index('class="warning"') < html.index('class="reading"')
    effect = next(s for s in data["reading"]["sentences"] if s.startswith("Averaged over the OOD sets"))
    assert "only bring Base up to a sound baseline on gaussian and bernoulli" in effect


def test_the_cause_follows_the_model(tmp_path):
    data, _ = build(tmp_path, base_noise_auroc=0.30, base_mnist_c=0.90, model="oe_convnet")
    assert "undertrained" in data["baseline_warning"]["sentences"][1]


@pytest.mark.parametrize("model", ["convnet", "oe_convnet"])
def test_a_sound_base_model_gets_no_warning(tmp_path, model):
    data, html = build(tmp_path, base_noise_auroc=0.995, base_mnist_c=0.86, model=model)
    assert data["baseline_warning"] is None and 'class="warning"' not in html
    assert not any("sound baseline" in s for s in data["reading"]["sentences"])


@pytest.mark.parametrize("augment_outliers", [True, False])
def test_the_summary_says_whether_outliers_were_augmented(tmp_path, augment_outliers):
    _, html = build(tmp_path, base_noise_auroc=0.995, base_mnist_c=0.86, augment_outliers=augment_outliers)
    assert f"outlier_exposure.augment_outliers: {str(augment_outliers).lower()}" in html
    assert ("shortcut" in html) is (not augment_outliers)
