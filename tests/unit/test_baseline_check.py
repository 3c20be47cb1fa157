"""The broken-baseline rule (lib/evaluate/baseline_check.py) on tables made from synthetic logits:
an overconfident Base model (sure of pure noise, brittle under corruption) sets it off, a healthy
one leaves it silent."""
import numpy as np
import pandas as pd
import pytest

from lib.evaluate.aggregate import COLUMNS, summarize
from lib.evaluate.baseline_check import check_baseline, recovered_part, uses_batch_norm, warning_sentences
from lib.evaluate.metrics import accuracy, detection_metrics
from lib.evaluate.scores import msp_score

NOISE = ("gaussian", "bernoulli", "uniform")


def confident_logits(rng, labels, margin, n_classes=10):
    """Logits whose class `labels[i]` leads the others by about `margin`."""
    z = rng.normal(0, 1, (len(labels), n_classes))
    z[np.arange(len(labels)), labels] += margin
    return z


def tables(overconfident, seeds=(1, 2)):
    """detection, accuracy and robustness summaries of a Base model, from logits per seed."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 10, 1000)
        right = np.where(rng.random(1000) < 0.98, labels, (labels + 1) % 10)   # 98% accuracy
        id_logits = confident_logits(rng, right, 8.0)
        model = dict(augment="none", oe="baseline", seed=seed, source="synthetic")
        rows.append(dict(model, metric="accuracy", set="id_test", score="", value=accuracy(id_logits, labels)))
        for name in NOISE:
            if overconfident:   # noise lands far out in one class's region: top softmax near 1
                noise_logits = confident_logits(rng, rng.integers(0, 10, 500), 30.0)
            else:               # flat logits: top softmax near 1/10
                noise_logits = rng.normal(0, 0.3, (500, 10))
            auroc = detection_metrics(msp_score(id_logits), msp_score(noise_logits))["auroc"]
            rows.append(dict(model, metric="auroc", set=name, score="msp", value=auroc))
        keep = 0.55 if overconfident else 0.88
        corrupted_right = np.where(rng.random(1000) < keep, labels, (labels + 3) % 10)
        corrupted = accuracy(confident_logits(rng, corrupted_right, 8.0), labels)
        rows.append(dict(model, metric="mean_accuracy", set="mnist_c", score="", value=corrupted))
    df = summarize(pd.DataFrame(rows, columns=COLUMNS))
    return {"detection": df[df.metric == "auroc"], "accuracy": df[df.metric == "accuracy"],
            "mnist_c": df[df.metric == "mean_accuracy"]}


def test_an_overconfident_baseline_sets_off_both_rules():
    findings = check_baseline(**tables(overconfident=True))
    assert {(f["rule"], f["set"]) for f in findings} == {("noise", n) for n in NOISE} | {("mnist_c", "mnist_c")}
    for f in findings:
        assert f["value"] < f["limit"] <= f["healthy"]
    sentences = warning_sentences(findings, "convnet")
    assert sentences[0].startswith("Warning: the Base model is not a sound baseline")
    assert "gaussian" in sentences[0] and "bernoulli" in sentences[0] and "MNIST-C" in sentences[0]
    assert "batch normalisation" in sentences[1] and "Hein et al." in sentences[1]
    assert "oe_convnet" in sentences[2]


def test_a_healthy_baseline_leaves_it_silent():
    t = tables(overconfident=False)
    assert check_baseline(**t) == []
    assert warning_sentences([], "convnet") == []
    assert recovered_part([], "auroc", "gaussian", base=0.99, method=1.0) is None


def test_just_below_the_limits_fires_and_just_above_does_not():
    def summary(metric, set_name, value, score=""):
        return pd.DataFrame([dict(augment="none", oe="baseline", metric=metric, set=set_name, score=score,
                                  mean=value, std=np.nan, n=1)])
    assert check_baseline(detection=summary("auroc", "bernoulli", 0.951, "msp")) == []
    assert check_baseline(detection=summary("auroc", "bernoulli", 0.949, "msp"))[0]["healthy"] == 0.9981
    acc = summary("accuracy", "id_test", 0.98)
    assert check_baseline(accuracy=acc, mnist_c=summary("mean_accuracy", "mnist_c", 0.79)) == []
    [finding] = check_baseline(accuracy=acc, mnist_c=summary("mean_accuracy", "mnist_c", 0.77))
    assert finding["healthy"] == pytest.approx(0.85)
    # Another model's numbers, or another in-distribution set, are not the Base model's check.
    other = summary("auroc", "gaussian", 0.2, "msp").assign(augment="pixmix")
    assert check_baseline(detection=other) == []
    assert check_baseline(detection=summary("auroc", "gaussian", 0.2, "msp"), in_distribution="fashion_mnist") == []
    assert check_baseline(accuracy=acc, mnist_c=summary("mean_accuracy", "mnist_c", 0.5), in_distribution="digits") == []
    assert check_baseline(detection=summary("auroc", "gaussian", 0.2, "msp"), in_distribution="digits")


def test_recovered_part_is_the_gain_up_to_a_healthy_baseline():
    findings = check_baseline(**tables(overconfident=True))
    gaussian = next(f for f in findings if f["set"] == "gaussian")
    base = gaussian["value"]
    assert recovered_part(findings, "auroc", "gaussian", base, 1.0) == pytest.approx(0.9996 - base)
    assert recovered_part(findings, "auroc", "gaussian", base, base + 0.1) == pytest.approx(0.1)
    assert recovered_part(findings, "auroc", "gaussian", base, base - 0.1) == 0.0
    assert recovered_part(findings, "auroc", "fashion_mnist", base, 1.0) is None


def test_the_cause_names_batch_norm_only_for_batch_norm_models():
    assert uses_batch_norm("convnet") and uses_batch_norm("small_convnet") and not uses_batch_norm("oe_convnet")
    findings = check_baseline(**tables(overconfident=True))
    assert "batch normalisation" not in " ".join(warning_sentences(findings, "oe_convnet"))
    assert "undertrained" in warning_sentences(findings, "oe_convnet")[1]
