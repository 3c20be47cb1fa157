"""lib.evaluate.forward saves what every score needs: logits, features, ODIN logits, Mahalanobis fit."""
import json
import logging
import os
import types

import numpy as np
import pandas as pd
import pytest
import torch

from lib import layout
from lib.common import load_npz, save_npz_atomic
from lib.evaluate.accuracy import accuracy_job
from lib.evaluate.aggregate import COLUMNS, aggregate_job
from lib.evaluate.detection import detection_record, load_train_stats, score_job
from lib.evaluate.forward import evaluate, forward_in_batches
from lib.train.models import build_model, save_torch_atomic, to_device_images
from lib.evaluate.scores import fit_mahalanobis, odin_logits
from lib.data.splits import validation_split

CFG = {"seed": 3, "train": {"device": "cpu", "val_fraction": 0.1, "eval_batch_size": 7}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny batches: on a busy machine, thread hand-offs cost 100x the arithmetic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    model = build_model("small_convnet", 10).eval()
    model_path = str(tmp / "model.pt")
    save_torch_atomic(model_path, {"state_dict": model.state_dict(), "model_name": "small_convnet", "num_classes": 10})
    rng = np.random.default_rng(0)
    id_data = {"x_train": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), "y_train": np.arange(60) % 10,
               "x_test": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), "y_test": np.arange(20) % 10}
    ood_path = str(tmp / "noise.npz")
    save_npz_atomic(ood_path, x_test=rng.integers(0, 256, (15, 28, 28), dtype=np.uint8), y_test=-np.ones(15, np.int64))
    out_dir = str(tmp / "logits")
    evaluate(model_path, id_data, CFG, [("noise", ood_path)], out_dir, logging.getLogger("test"), odin=True)
    plain_dir = str(tmp / "plain")
    evaluate(model_path, id_data, CFG, [("noise", ood_path)], plain_dir, logging.getLogger("test"), odin=False)
    return types.SimpleNamespace(model=model, id_data=id_data, out_dir=out_dir, plain_dir=plain_dir, ood_path=ood_path)


def test_every_set_has_logits_features_and_odin_logits(evaluated):
    sizes = {"id_test": 20, "id_val": 6, "noise": 15}   # id_val: 10% of 60 training images
    for name, n in sizes.items():
        out = load_npz(os.path.join(evaluated.out_dir, f"{name}.npz"))
        assert out["logits"].shape == (n, 10) and out["logits"].dtype == np.float32
        assert out["features"].shape == (n, 128) and out["features"].dtype == np.float32
        assert out["odin_logits"].shape == (n, 10) and out["odin_logits"].dtype == np.float32
        assert out["labels"].shape == (n,)
    assert (load_npz(os.path.join(evaluated.out_dir, "noise.npz"))["labels"] == -1).all()


def test_without_odin_no_odin_logits_are_saved(evaluated):
    out = load_npz(os.path.join(evaluated.plain_dir, "id_test.npz"))
    assert "odin_logits" not in out
    np.testing.assert_array_equal(out["logits"], load_npz(os.path.join(evaluated.out_dir, "id_test.npz"))["logits"])


def test_odin_logits_in_batches_equal_one_big_batch(evaluated):
    x = to_device_images(evaluated.id_data["x_test"], torch.device("cpu"))
    expected = odin_logits(evaluated.model, x).numpy()
    saved = load_npz(os.path.join(evaluated.out_dir, "id_test.npz"))["odin_logits"]
    np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-7)
    # divided by T = 1000: far smaller than the plain logits
    plain = load_npz(os.path.join(evaluated.out_dir, "id_test.npz"))["logits"]
    assert np.abs(saved).max() < np.abs(plain).max() / 100


def test_mahalanobis_fit_uses_the_training_split_only(evaluated):
    stats = load_train_stats(os.path.join(evaluated.out_dir, layout.MAHALANOBIS_STATS))
    assert stats["class_means"].shape == (10, 128) and stats["precision"].shape == (128, 128)
    train_idx, val_idx = validation_split(60, CFG["seed"], 0.1)
    assert len(train_idx) == 54 and len(val_idx) == 6
    _, feats = forward_in_batches(evaluated.model, evaluated.id_data["x_train"][train_idx], torch.device("cpu"))
    expected = fit_mahalanobis(feats, evaluated.id_data["y_train"][train_idx])
    np.testing.assert_allclose(stats["class_means"], expected["class_means"], rtol=1e-5, atol=1e-6)
    # every class mean over the whole training set (validation included) would differ
    _, all_feats = forward_in_batches(evaluated.model, evaluated.id_data["x_train"], torch.device("cpu"))
    with_val = fit_mahalanobis(all_feats, evaluated.id_data["y_train"])
    assert not np.allclose(stats["class_means"], with_val["class_means"])


def test_score_job_scores_mahalanobis_and_odin(evaluated, tmp_path):
    id_path = os.path.join(evaluated.out_dir, "id_test.npz")
    ood_path = os.path.join(evaluated.out_dir, "noise.npz")
    for score in ("mahalanobis", "odin", "energy", "maxlogit"):
        out = tmp_path / f"{score}.json"
        stats_path = os.path.join(evaluated.out_dir, layout.MAHALANOBIS_STATS) if score == "mahalanobis" else None
        score_job(id_path, ood_path, str(out), str(tmp_path / "log"), augment="none", oe="baseline", seed="1",
                  ood_set="noise", score=score, train_stats_path=stats_path)
        record = json.loads(out.read_text())
        assert record["score"] == score and (record["augment"], record["oe"], record["seed"]) == ("none", "baseline", 1)
        assert record["ood_set"] == "noise" and record["source"] == ood_path and 0 <= record["auroc"] <= 1
    with pytest.raises(ValueError, match="train_stats"):
        detection_record(id_path, ood_path, "mahalanobis")
    with pytest.raises(KeyError, match="odin_logits"):
        detection_record(os.path.join(evaluated.plain_dir, "id_test.npz"),
                         os.path.join(evaluated.plain_dir, "noise.npz"), "odin")
    with pytest.raises(FileNotFoundError, match="rerun its evaluate job"):
        load_train_stats(str(tmp_path / "missing.npz"))


def test_accuracy_job_writes_the_models_accuracy_and_nll(evaluated, tmp_path):
    id_path = os.path.join(evaluated.out_dir, "id_test.npz")
    out = tmp_path / "accuracy.json"
    accuracy_job(id_path, str(out), str(tmp_path / "log"), augment="pixmix", oe="oe", seed="2")
    record = json.loads(out.read_text())
    arrays = load_npz(id_path)
    assert (record["augment"], record["oe"], record["seed"], record["n"]) == ("pixmix", "oe", 2, 20)
    assert record["accuracy"] == pytest.approx(float((arrays["logits"].argmax(1) == arrays["labels"]).mean()))
    assert record["nll"] > 0 and record["source"] == id_path


def test_aggregate_job_writes_the_records_as_long_tables(evaluated, tmp_path):
    id_path, ood_path = (os.path.join(evaluated.out_dir, f"{name}.npz") for name in ("id_test", "noise"))
    scores = []
    for score in ("msp", "energy"):
        scores.append(str(tmp_path / f"{score}.json"))
        score_job(id_path, ood_path, scores[-1], str(tmp_path / "log"), augment="none", oe="baseline", seed=1,
                  ood_set="noise", score=score)
    accuracy = str(tmp_path / "accuracy.json")
    accuracy_job(id_path, accuracy, str(tmp_path / "log"), augment="none", oe="baseline", seed=1)
    detection_csv, accuracy_csv = tmp_path / "detection.csv", tmp_path / "accuracy.csv"
    aggregate_job(scores, [accuracy], str(detection_csv), str(accuracy_csv), str(tmp_path / "aggregate.log"))
    detection, acc = pd.read_csv(detection_csv, keep_default_na=False), pd.read_csv(accuracy_csv, keep_default_na=False)
    assert list(detection.columns) == COLUMNS and list(acc.columns) == COLUMNS
    assert len(detection) == 2 * 7 and set(detection["score"]) == {"msp", "energy"} and set(detection["set"]) == {"noise"}
    auroc = detection[(detection.metric == "auroc") & (detection.score == "msp")]
    assert auroc["value"].item() == pytest.approx(json.loads(open(scores[0]).read())["auroc"])
    assert sorted(acc["metric"]) == ["accuracy", "nll"] and set(acc["source"]) == {accuracy}
