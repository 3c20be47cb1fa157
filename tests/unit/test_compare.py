"""lib.evaluate.differences: paired t over seeds, bootstrap over examples with one seed, headline choice."""
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from lib.common import save_npz_atomic
from lib.evaluate.differences import DIFFERENCE_COLUMNS, differences, headlines, main, read_tables
from lib.evaluate.metrics import auroc, ece


def _rows(metric, set_name, score, values, table):
    """values: {(augment, oe): [v_seed1, v_seed2, ...]}"""
    return [dict(augment=a, oe=o, seed=s + 1, metric=metric, set=set_name, score=score, value=v, source="x")
            for (a, o), vs in values.items() for s, v in enumerate(vs)]


def _table(rows, path):
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False)
    return df, str(path)


def test_paired_t_over_three_seeds_by_hand(tmp_path):
    acc = _table(_rows("accuracy", "id_test", "", {("none", "baseline"): [0.88, 0.89, 0.90],
                                                   ("none", "oe"): [0.90, 0.92, 0.94]}, "accuracy"),
                 tmp_path / "accuracy.csv")
    df = differences({"accuracy": acc}, str(tmp_path / "no-logits"))
    assert list(df.columns) == DIFFERENCE_COLUMNS
    (row,) = df.to_dict("records")
    # d = 0.02, 0.03, 0.04: mean 0.03, sd 0.01, half width t(0.975, 2) * 0.01 / sqrt 3.
    half = scipy_stats.t.ppf(0.975, 2) * 0.01 / np.sqrt(3)
    assert row["diff"] == pytest.approx(0.03)
    assert (row["low"], row["high"]) == pytest.approx((0.03 - half, 0.03 + half))
    assert half == pytest.approx(0.024841, abs=1e-6)
    assert row["method"] == "paired t interval over 3 seeds" and row["n"] == 3
    assert (row["augment"], row["oe"], row["metric"], row["set"], row["score"]) == ("none", "oe", "accuracy", "id_test", "")
    assert row["source"] == str(tmp_path / "accuracy.csv")


def test_only_common_seeds_are_paired(tmp_path):
    acc = _table(_rows("accuracy", "id_test", "", {("none", "baseline"): [0.5, 0.6, 0.7],
                                                   ("saltpepper", "baseline"): [0.6, 0.8]}, "accuracy"),
                 tmp_path / "accuracy.csv")
    (row,) = differences({"accuracy": acc}, str(tmp_path)).to_dict("records")
    assert row["n"] == 2 and row["diff"] == pytest.approx(0.15)


def test_no_baseline_model_gives_an_empty_table(tmp_path):
    acc = _table(_rows("accuracy", "id_test", "", {("saltpepper", "oe"): [0.9, 0.8]}, "accuracy"),
                 tmp_path / "accuracy.csv")
    df = differences({"accuracy": acc}, str(tmp_path))
    assert df.empty and list(df.columns) == DIFFERENCE_COLUMNS


def test_headlines_follow_the_tables():
    det = pd.DataFrame(_rows("auroc", "gaussian", "msp", {("none", "baseline"): [0.9]}, "d")
                       + _rows("fpr95", "gaussian", "msp", {("none", "baseline"): [0.1]}, "d")
                       + _rows("auroc", "negated", "energy", {("none", "baseline"): [0.9]}, "d"))
    cal = pd.DataFrame(_rows("ece", "id_test", "uncalibrated", {("none", "baseline"): [0.1]}, "c"))
    got = [(h["metric"], h["set"], h["score"]) for h in headlines({"detection": (det, "d"), "calibration": (cal, "c")})]
    assert got == [("auroc", "gaussian", "msp"), ("auroc", "negated", "energy"),
                   ("ece", "id_test", "uncalibrated"), ("ece", "id_test", "temperature_scaled")]
    cal_c = pd.concat([cal, pd.DataFrame(_rows("accuracy", "mnist_c", "uncalibrated", {("none", "baseline"): [0.8]}, "c"))])
    got = [(h["metric"], h["set"], h["score"]) for h in headlines({"calibration": (cal_c, "c")})]
    assert ("accuracy", "mnist_c", "") in got and ("ece", "mnist_c", "temperature_scaled") in got


def _logits(correct_flags, confidence_logit=3.0, n_classes=3):
    """Logits whose top-1 prediction is right where flagged (labels all 0)."""
    z = np.zeros((len(correct_flags), n_classes), np.float32)
    for i, ok in enumerate(correct_flags):
        z[i, 0 if ok else 1] = confidence_logit
    return z


def _model_files(root, augment, oe, id_correct, ood_logits, corruptions=None):
    d = os.path.join(root, augment, oe, "seed1")
    feats = lambda n: np.zeros((n, 2), np.float32)
    save_npz_atomic(os.path.join(d, "id_test.npz"), logits=_logits(id_correct),
                    labels=np.zeros(len(id_correct), np.int64), features=feats(len(id_correct)))
    save_npz_atomic(os.path.join(d, "gaussian.npz"), logits=ood_logits.astype(np.float32),
                    labels=-np.ones(len(ood_logits), np.int64), features=feats(len(ood_logits)))
    for name, flags in (corruptions or {}).items():
        save_npz_atomic(os.path.join(d, f"mnistc_{name}.npz"), logits=_logits(flags, 1.0),
                        labels=np.zeros(len(flags), np.int64), features=feats(len(flags)))
    return d


def test_one_seed_bootstraps_over_examples(tmp_path):
    root = str(tmp_path / "logits")
    rng = np.random.default_rng(0)
    base_id = rng.random(200) < 0.7
    model_id = rng.random(200) < 0.9
    base_ood = rng.normal(0, 1, (150, 3))
    model_ood = np.zeros((150, 3))          # flat: MSP -1/3, the most anomalous possible
    base_dir = _model_files(root, "none", "baseline", base_id, base_ood, {"fog": [1, 0, 1, 1], "blur": [1, 1]})
    model_dir = _model_files(root, "none", "oe", model_id, model_ood, {"fog": [1, 1, 1, 1], "blur": [0, 1]})
    models = {("none", "baseline"): [None], ("none", "oe"): [None]}

    def per_model(metric, set_name, score, values):
        return [dict(r, value=values[(r["augment"], r["oe"])]) for r in _rows(metric, set_name, score, models, "t")]

    acc = _table(per_model("accuracy", "id_test", "", {("none", "baseline"): base_id.mean(), ("none", "oe"): model_id.mean()}),
                 tmp_path / "accuracy.csv")
    det = _table(per_model("auroc", "gaussian", "msp", {("none", "baseline"): 0.6, ("none", "oe"): 0.9}),
                 tmp_path / "detection.csv")
    cal = _table(per_model("accuracy", "mnist_c", "uncalibrated", {("none", "baseline"): 0.0, ("none", "oe"): 0.0})
                 + [r for set_name in ("id_test", "mnist_c") for variant in ("uncalibrated", "temperature_scaled")
                    for r in per_model("ece", set_name, variant, {("none", "baseline"): 0.0, ("none", "oe"): 0.0})]
                 + per_model("temperature", "id_val", "temperature_scaled", {("none", "baseline"): 2.0, ("none", "oe"): 0.5})
                 + per_model("accuracy", "mnistc_fog", "uncalibrated", {("none", "baseline"): 0.0, ("none", "oe"): 0.0})
                 + per_model("accuracy", "mnistc_blur", "uncalibrated", {("none", "baseline"): 0.0, ("none", "oe"): 0.0}),
                 tmp_path / "calibration.csv")
    df = differences({"accuracy": acc, "detection": det, "calibration": cal}, root, n_boot=200)
    rows = {(r["metric"], r["set"], r["score"]): r for r in df.to_dict("records")}
    assert set(rows) == {("accuracy", "id_test", ""), ("auroc", "gaussian", "msp"), ("accuracy", "mnist_c", ""),
                         ("ece", "id_test", "uncalibrated"), ("ece", "id_test", "temperature_scaled"),
                         ("ece", "mnist_c", "uncalibrated"), ("ece", "mnist_c", "temperature_scaled")}
    for r in rows.values():
        assert r["method"].startswith("percentile bootstrap over test examples")
        assert r["low"] <= r["diff"] <= r["high"]
        assert r["source"].split(";")[0].startswith(model_dir)
    # diff comes from the logits, not from the (deliberately wrong) values in the CSVs
    acc_row = rows[("accuracy", "id_test", "")]
    assert acc_row["diff"] == pytest.approx(model_id.mean() - base_id.mean()) and acc_row["n"] == 200
    msp = lambda z: -np.exp(z - z.max(1, keepdims=True)).max(1) / np.exp(z - z.max(1, keepdims=True)).sum(1)
    id_msp_model, id_msp_base = msp(_logits(model_id).astype(float)), msp(_logits(base_id).astype(float))
    expected = auroc(id_msp_model, msp(model_ood)) - auroc(id_msp_base, msp(base_ood))
    assert rows[("auroc", "gaussian", "msp")]["diff"] == pytest.approx(expected)
    assert rows[("auroc", "gaussian", "msp")]["n"] == 350
    assert "each group resampled separately" in rows[("auroc", "gaussian", "msp")]["method"]
    # MNIST-C accuracy: mean over corruptions (fog 1 vs 3/4, blur 1/2 vs 1), pooled would differ
    assert rows[("accuracy", "mnist_c", "")]["diff"] == pytest.approx((1 + 0.5) / 2 - (0.75 + 1) / 2)
    assert rows[("accuracy", "mnist_c", "")]["n"] == 6
    # ECE after scaling uses each model's own temperature from calibration.csv
    conf = lambda flags, logit, t: np.full(len(flags), np.exp(logit / t) / (np.exp(logit / t) + 2))
    expected_ece = (ece(conf(model_id, 3.0, 0.5), model_id) - ece(conf(base_id, 3.0, 2.0), base_id))
    assert rows[("ece", "id_test", "temperature_scaled")]["diff"] == pytest.approx(expected_ece)


def test_mahalanobis_bootstrap_reads_the_train_stats(tmp_path):
    root = str(tmp_path / "logits")
    for oe in ("baseline", "oe"):
        d = os.path.join(root, "none", oe, "seed1")
        save_npz_atomic(os.path.join(d, "id_test.npz"), logits=np.zeros((4, 2), np.float32), labels=np.zeros(4, np.int64),
                        features=np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32))
        save_npz_atomic(os.path.join(d, "gaussian.npz"), logits=np.zeros((3, 2), np.float32), labels=-np.ones(3, np.int64),
                        features=np.array([[5, 5], [0.5, 0.5], [9, 0]], np.float32))
        save_npz_atomic(os.path.join(d, "mahalanobis_stats.npz"), class_means=np.zeros((1, 2)), precision=np.eye(2))
    rows = [dict(augment="none", oe=o, seed=1, metric="auroc", set="gaussian", score="mahalanobis", value=0.5, source="d")
            for o in ("baseline", "oe")]
    det = _table(rows, tmp_path / "detection.csv")
    (row,) = differences({"detection": det}, root, n_boot=50).to_dict("records")
    assert row["diff"] == 0.0 and row["source"].count("mahalanobis_stats.npz") == 2
    os.remove(os.path.join(root, "none", "oe", "seed1", "mahalanobis_stats.npz"))
    with pytest.raises(FileNotFoundError, match="mahalanobis_stats.npz.*evaluate"):
        differences({"detection": det}, root, n_boot=50)


def test_command_line_writes_the_csv(tmp_path):
    _table(_rows("accuracy", "id_test", "", {("none", "baseline"): [0.5, 0.6], ("none", "oe"): [0.7, 0.7]}, "a"),
           tmp_path / "accuracy.csv")
    main(["--tables", str(tmp_path), "--logits", str(tmp_path), "--out", str(tmp_path / "differences.csv")])
    df = pd.read_csv(tmp_path / "differences.csv")
    assert df["diff"].item() == pytest.approx(0.15) and df["n"].item() == 2
    assert set(read_tables(str(tmp_path))) == {"accuracy"}


def test_command_line_reads_the_logits_beside_the_tables_by_default(tmp_path, monkeypatch):
    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    ones = np.ones(20, bool)
    for augment, oe, flags in (("none", "baseline", ones), ("none", "oe", ones)):
        _model_files(str(tmp_path / "results" / "logits"), augment, oe, flags, np.zeros((5, 3)))
    _table(_rows("accuracy", "id_test", "", {("none", "baseline"): [1.0], ("none", "oe"): [1.0]}, "a"),
           tables / "accuracy.csv")
    monkeypatch.chdir(tmp_path)
    main(["--tables", "results/tables", "--out", "differences.csv", "--n-boot", "20"])
    (row,) = pd.read_csv(tmp_path / "differences.csv").to_dict("records")
    assert row["diff"] == 0.0 and row["method"].startswith("percentile bootstrap")
    assert row["source"] == "results/logits/none/oe/seed1/id_test.npz;results/logits/none/baseline/seed1/id_test.npz"


def test_the_default_logits_folder_is_the_tables_sibling_however_tables_is_named(tmp_path, monkeypatch):
    seen = []

    def record_logits_folder(tables, logits_root, **options):
        seen.append(logits_root)
        return pd.DataFrame(columns=DIFFERENCE_COLUMNS)
    monkeypatch.setattr("lib.evaluate.differences.differences", record_logits_folder)
    (tmp_path / "results" / "tables").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "results" / "tables")
    for tables in (str(tmp_path / "results" / "tables"), ".", "../tables/"):
        main(["--tables", tables, "--out", str(tmp_path / "differences.csv")])
    monkeypatch.chdir(tmp_path)
    main(["--tables", "results/tables", "--out", str(tmp_path / "differences.csv")])
    assert seen == [str(tmp_path / "results" / "logits")] * 2 + ["../logits", "results/logits"]
