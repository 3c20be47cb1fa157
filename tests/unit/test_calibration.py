"""lib.evaluate.calibration: temperature from id_val only, before/after metrics, MNIST-C mean, tables."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from lib.evaluate.calibration import (aggregate_calibration_job, calibration_job, calibration_record,
                             confidence_and_correct, mnistc_files)
from lib.common import save_npz_atomic
from lib.evaluate.metrics import calibration_metrics


def _save(path, logits, labels):
    save_npz_atomic(str(path), logits=np.asarray(logits, np.float32), labels=np.asarray(labels, np.int64),
                    features=np.zeros((len(labels), 2), np.float32))
    return str(path)


@pytest.fixture
def model_dir(tmp_path):
    """id_val: four times logits (2, 0) with 3 of 4 labels 0, so the NLL-optimal T = 2 / ln 3."""
    d = tmp_path / "logits"
    d.mkdir()
    _save(d / "id_val.npz", [[2, 0]] * 4, [0, 0, 0, 1])
    _save(d / "id_test.npz", [[2, 0], [0, 1]], [0, 0])
    return d


def test_temperature_is_fitted_on_id_val_by_hand(model_dir):
    rec = calibration_record(model_dir / "id_test.npz", model_dir / "id_val.npz")
    # sigmoid(2 / T) must equal the 3/4 share of label 0: T = 2 / logit(0.75) = 2 / ln 3.
    assert rec["temperature"] == pytest.approx(2 / math.log(3), rel=1e-4)
    assert rec["n_val"] == 4
    assert set(rec["sets"]) == {"id_test"}


def test_id_test_metrics_by_hand(model_dir):
    rec = calibration_record(model_dir / "id_test.npz", model_dir / "id_val.npz")
    before = rec["sets"]["id_test"]["uncalibrated"]
    c1, c2 = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1))   # confidences 0.881 (right), 0.731 (wrong)
    assert before["accuracy"] == 0.5
    assert before["ece"] == pytest.approx(0.5 * (1 - c1) + 0.5 * c2)       # two different bins
    assert before["rms"] == pytest.approx(abs((c1 + c2) / 2 - 0.5))       # one adaptive bin
    assert before["brier"] == pytest.approx((2 * (1 - c1) ** 2 + 2 * c2 ** 2) / 2)
    assert before["nll"] == pytest.approx((-math.log(c1) - math.log(1 - c2)) / 2)
    after = rec["sets"]["id_test"]["temperature_scaled"]
    t = rec["temperature"]
    expected = calibration_metrics(np.array([[2, 0], [0, 1]], float), np.array([0, 0]), t)
    assert after == pytest.approx(expected)
    assert after["temperature"] == pytest.approx(t) and before["temperature"] == 1.0


def test_mnist_c_is_the_unweighted_mean_over_corruptions(model_dir):
    # fog: 2 images, both right; blur: 4 images, 2 right. Pooled accuracy would be 4/6.
    fog = _save(model_dir / "mnistc_fog.npz", [[3, 0], [0, 3]], [0, 1])
    blur = _save(model_dir / "mnistc_blur.npz", [[3, 0], [0, 3], [3, 0], [0, 3]], [0, 1, 1, 0])
    rec = calibration_record(model_dir / "id_test.npz", model_dir / "id_val.npz", {"fog": fog, "blur": blur})
    assert set(rec["sets"]) == {"id_test", "mnistc_fog", "mnistc_blur", "mnist_c", "mnist_c_pooled"}
    for variant in ("uncalibrated", "temperature_scaled"):
        mean = rec["sets"]["mnist_c"][variant]
        assert mean["accuracy"] == pytest.approx(0.75)
        for metric in ("ece", "rms", "brier", "nll"):
            assert mean[metric] == pytest.approx(
                (rec["sets"]["mnistc_fog"][variant][metric] + rec["sets"]["mnistc_blur"][variant][metric]) / 2)
        assert mean["n"] == 6 and mean["n_corruptions"] == 2
    bins = rec["reliability"]["mnist_c_pooled"]["uncalibrated"]
    assert sum(bins["count"]) == 6 and sum(bins["correct_sum"]) == pytest.approx(4)   # pooled examples


def test_mnist_c_pooled_computes_each_metric_on_all_corrupted_images_at_once(model_dir):
    fog = _save(model_dir / "mnistc_fog.npz", [[3, 0], [0, 3]], [0, 1])
    blur = _save(model_dir / "mnistc_blur.npz", [[3, 0], [0, 3], [3, 0], [0, 3]], [0, 1, 1, 0])
    rec = calibration_record(model_dir / "id_test.npz", model_dir / "id_val.npz", {"fog": fog, "blur": blur})
    logits = np.array([[3, 0], [0, 3], [3, 0], [0, 3], [3, 0], [0, 3]], float)
    labels = np.array([0, 1, 0, 1, 1, 0])
    for variant, t in (("uncalibrated", 1.0), ("temperature_scaled", rec["temperature"])):
        pooled = rec["sets"]["mnist_c_pooled"][variant]
        assert pooled["accuracy"] == pytest.approx(4 / 6)   # the mean over corruptions says 0.75
        expected = calibration_metrics(logits, labels, t)
        for metric in ("ece", "rms", "brier", "nll", "n"):
            assert pooled[metric] == pytest.approx(expected[metric])
        assert pooled["n_corruptions"] == 2
    # Same confidence everywhere (softmax of 3 vs 0), accuracy 1 on fog and 0.5 on blur:
    # the mean ECE averages two gaps, the pooled one sees a single bin.
    c = 1 / (1 + math.exp(-3))
    assert rec["sets"]["mnist_c"]["uncalibrated"]["ece"] == pytest.approx(((1 - c) + (c - 0.5)) / 2)
    assert rec["sets"]["mnist_c_pooled"]["uncalibrated"]["ece"] == pytest.approx(abs(c - 4 / 6))


def test_mnistc_files_finds_the_corruption_sets(model_dir):
    _save(model_dir / "mnistc_fog.npz", [[1, 0]], [0])
    _save(model_dir / "mnistc_shot_noise.npz", [[1, 0]], [0])
    assert sorted(mnistc_files(str(model_dir))) == ["fog", "shot_noise"]
    assert mnistc_files(str(model_dir / "missing")) == {}


def test_unlabelled_set_is_refused_with_its_name(model_dir):
    bad = _save(model_dir / "mnistc_fog.npz", [[1, 0]], [-1])
    with pytest.raises(ValueError, match="mnistc_fog.npz.*labelled"):
        calibration_record(model_dir / "id_test.npz", model_dir / "id_val.npz", {"fog": bad})


def test_confidence_and_correct_scales_by_temperature():
    conf, correct = confidence_and_correct(np.array([[2.0, 0.0]]), np.array([1]), temperature=2.0)
    assert conf[0] == pytest.approx(1 / (1 + math.exp(-1))) and correct[0] == 0.0


def test_job_and_tables(model_dir, tmp_path):
    fog = _save(model_dir / "mnistc_fog.npz", [[3, 0], [0, 3]], [0, 1])
    paths = []
    for augment, seed in (("none", 1), ("none", 2)):
        out = tmp_path / f"{augment}{seed}.json"
        calibration_job(str(model_dir / "id_test.npz"), str(model_dir / "id_val.npz"), {"fog": fog}, str(out),
                        str(tmp_path / "job.log"), augment=augment, oe="baseline", seed=str(seed))
        paths.append(str(out))
    rec = json.loads(open(paths[0]).read())
    assert rec["seed"] == 1 and rec["augment"] == "none"
    cal_csv, rel_csv = tmp_path / "calibration.csv", tmp_path / "reliability.csv"
    aggregate_calibration_job(paths, str(cal_csv), str(rel_csv), str(tmp_path / "agg.log"))
    cal = pd.read_csv(cal_csv)
    assert list(cal.columns) == ["augment", "oe", "seed", "metric", "set", "score", "value", "source"]
    assert set(cal["set"]) == {"id_val", "id_test", "mnistc_fog", "mnist_c", "mnist_c_pooled"}
    assert set(cal["score"]) == {"uncalibrated", "temperature_scaled"}
    t = cal[(cal.metric == "temperature") & (cal.seed == 1)]["value"].item()
    assert t == pytest.approx(2 / math.log(3), rel=1e-4)
    ece_before = cal[(cal.metric == "ece") & (cal.set == "id_test") & (cal.score == "uncalibrated") & (cal.seed == 2)]
    assert ece_before["value"].item() == pytest.approx(rec["sets"]["id_test"]["uncalibrated"]["ece"])
    assert ece_before["source"].item() == paths[1]
    rel = pd.read_csv(rel_csv)
    counts = rel[(rel.metric == "count") & (rel.seed == 1)].groupby(["set", "score"])["value"].sum()
    assert counts[("id_test", "uncalibrated")] == 2 and counts[("mnist_c_pooled", "temperature_scaled")] == 2
    filled = rel[(rel.metric == "accuracy") & rel["value"].notna() & (rel.set == "id_test") & (rel.seed == 1)
                 & (rel.score == "uncalibrated")]
    assert sorted(filled["value"]) == [0.0, 1.0]
    assert (rel["bin_high"] - rel["bin_low"]).round(6).eq(round(1 / 15, 6)).all()
