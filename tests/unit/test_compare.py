"""lib.evaluate.differences: comparisons, families, Holm, verdicts, detectable differences, files read."""
import os

import numpy as np
import pandas as pd
import pytest

from benchmarks.study import write_study
from lib.common import save_npz_atomic
from lib.evaluate import stats
from lib.evaluate.differences import (DETECTABLE_COLUMNS, DIFFERENCE_COLUMNS, FAMILIES, compare_study, headline_score,
                                      headlines, main, read_tables)
from lib.evaluate.metrics import auroc, ece
from lib.evaluate.ranks import rank_tables

MODELS = [("none", "baseline"), ("none", "oe"), ("saltpepper", "baseline"), ("saltpepper", "oe")]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A three-seed study of four models, two OOD sets, two scores, two corruptions."""
    results = write_study(str(tmp_path_factory.mktemp("study")), augments=("none", "saltpepper"), oes=("baseline", "oe"),
                          seeds=(1, 2, 3), ood_sets=("gaussian", "kmnist"), scores=("msp", "energy"),
                          corruptions=("fog", "shear"), n_test=400, n_ood=300, n_corrupted=300, gap=1.0)
    tables = read_tables(os.path.join(results, "tables"))
    out = compare_study(tables, os.path.join(results, "logits"), os.path.join(results, "scores"), n_boot=100)
    return results, tables, out


def test_every_model_is_compared_with_base_on_every_headline(study):
    _, tables, out = study
    df = out["differences"]
    assert list(df.columns) == DIFFERENCE_COLUMNS and set(df["family"]) <= set(FAMILIES)
    table = df[df["family"].str.startswith("table/")]
    assert set(zip(table["ref_augment"], table["ref_oe"])) == {("none", "baseline")}
    # ID accuracy, 2 sets x 2 scores AUROC, ID ECE x 2, MNIST-C accuracy, MNIST-C ECE x 2
    assert (table.groupby(["augment", "oe"]).size() == 1 + 4 + 2 + 1 + 2).all() and len(table) == 3 * 10
    assert set(table["family"]) == {"table/accuracy", "table/auroc", "table/ece"}
    assert (table["n_seeds"] == 3).all()


def test_diff_is_the_mean_over_seeds_of_the_tables_paired_differences(study):
    results, tables, out = study
    df = out["differences"]
    det = tables["detection"][0]
    row = df[(df.family == "table/auroc") & (df.augment == "saltpepper") & (df.oe == "oe") & (df.set == "kmnist")
             & (df.score == "energy")].iloc[0]
    value = lambda a, o: det[(det.augment == a) & (det.oe == o) & (det.set == "kmnist") & (det.score == "energy")
                             & (det.metric == "auroc")].sort_values("seed")["value"].to_numpy()
    assert row["diff"] == pytest.approx((value("saltpepper", "oe") - value("none", "baseline")).mean())
    assert row["n_examples"] == 700
    assert row["source"].split(";") == [f"{results}/scores/{a}/{o}/seed{s}/kmnist/energy.npz"
                                        for a, o in (("saltpepper", "oe"), ("none", "baseline")) for s in (1, 2, 3)]
    cal = tables["calibration"][0]
    mnist_c = df[(df.family == "table/ece") & (df.set == "mnist_c") & (df.score == "temperature_scaled")
                 & (df.augment == "none") & (df.oe == "oe")].iloc[0]
    ece_of = lambda o: cal[(cal.augment == "none") & (cal.oe == o) & (cal.set == "mnist_c") & (cal.metric == "ece")
                           & (cal.score == "temperature_scaled")].sort_values("seed")["value"].to_numpy()
    assert mnist_c["diff"] == pytest.approx((ece_of("oe") - ece_of("baseline")).mean())
    assert mnist_c["n_examples"] == 600
    files = mnist_c["source"].split(";")
    assert len(files) == 2 * 3 * 2 + 1 and files[0] == f"{results}/logits/none/oe/seed1/mnistc_fog.npz"
    assert files[-1] == tables["calibration"][1] and all(os.path.exists(f) for f in files)


def test_intervals_p_values_and_holm_per_family(study):
    df = study[2]["differences"]
    half = stats.half_width(df["se_seeds"], df["se_examples"], df["n_seeds"])
    assert np.allclose(df["high"] - df["diff"], half) and np.allclose(df["diff"] - df["low"], half)
    assert ((df["p"] < 0.05) == ((df["low"] > 0) | (df["high"] < 0))).all()
    for family, part in df.groupby("family"):
        assert (part["family_size"] == len(part)).all()
        assert np.allclose(part["p_holm"], stats.holm(part["p"].to_numpy()))
    assert (df["p_holm"] >= df["p"]).all()
    assert df["method"].str.startswith("two-level bootstrap, 3 seeds x").all()


def test_verdicts_need_the_corrected_p_and_a_detectable_size(study):
    df, found = study[2]["differences"], study[2]["detectable"]
    assert list(found.columns) == DETECTABLE_COLUMNS
    assert set(zip(found.metric, found.set)) == set(zip(df.metric, df.set))
    mdd = {(r.metric, r.set): r.mdd for r in found.itertuples()}
    assert np.allclose(df["mdd"], [mdd[k] for k in zip(df.metric, df.set)])
    beyond = (df["p_holm"] < 0.05) & (df["diff"].abs() >= df["mdd"])
    assert (df["verdict"] == np.where(beyond, "beyond noise", "within noise")).all()
    assert df["verdict"].eq("beyond noise").any() and df["verdict"].eq("within noise").any()
    # the synthetic models differ by design: a significant difference smaller than the mdd stays within noise
    row = found.iloc[0]
    assert row["mdd"] == pytest.approx(stats.detectable_difference(row["seed_sd"], row["example_se"], 3))
    assert row["floor"] < row["mdd"] and row["n_seeds"] == 3


def test_summary_families(study):
    _, tables, out = study
    df = out["differences"]
    best = df[df.family == "summary/accuracy_best"]
    acc = tables["accuracy"][0].groupby(["augment", "oe"])["value"].mean()
    (ref,) = set(zip(best.ref_augment, best.ref_oe))
    assert ref == acc.idxmax() and len(best) == 3 and (best["diff"] <= 0).all()
    oe = df[df.family == "summary/auroc_oe"]
    assert set(oe["score"]) == {"msp"} and set(oe["set"]) == {"gaussian", "kmnist"}
    assert set(zip(oe.augment, oe.oe, oe.ref_augment, oe.ref_oe)) == {
        ("none", "oe", "none", "baseline"), ("saltpepper", "oe", "saltpepper", "baseline")}
    assert len(df[df.family == "summary/auroc_best"]) == 2 * 3
    augment = df[df.family == "summary/accuracy_augment"]
    assert list(zip(augment.augment, augment.oe)) == [("saltpepper", "baseline")] and augment["family_size"].item() == 1
    # the same comparison in two families: the same interval, its own correction
    same = df[(df.augment == "saltpepper") & (df.oe == "baseline") & (df.metric == "accuracy") & (df.set == "id_test")
              & (df.ref_augment == "none") & (df.ref_oe == "baseline")]
    assert set(same["family"]) == {"table/accuracy", "summary/accuracy_augment"} and same["low"].nunique() == 1


def test_headline_score_prefers_msp():
    assert headline_score(["energy", "msp"]) == "msp" and headline_score(["energy", "xent"]) == "energy"
    assert headline_score([]) is None


def test_only_common_seeds_are_paired(study, tmp_path):
    results, tables, _ = study
    acc, path = tables["accuracy"]
    dropped = acc[~((acc.augment == "none") & (acc.oe == "oe") & (acc.seed == 2))]
    out = compare_study({"accuracy": (dropped, path)}, os.path.join(results, "logits"), os.path.join(results, "scores"),
                        n_boot=50)["differences"]
    row = out[(out.family == "table/accuracy") & (out.oe == "oe") & (out.augment == "none")].iloc[0]
    value = lambda o, s: acc[(acc.augment == "none") & (acc.oe == o) & (acc.seed == s)]["value"].item()
    assert row["n_seeds"] == 2
    assert row["diff"] == pytest.approx(np.mean([value("oe", s) - value("baseline", s) for s in (1, 3)]))


def test_no_baseline_model_gives_empty_tables(study):
    results, tables, _ = study
    acc, path = tables["accuracy"]
    out = compare_study({"accuracy": (acc[acc.augment != "none"], path)}, results, results)
    assert out["differences"].empty and list(out["differences"].columns) == DIFFERENCE_COLUMNS
    assert out["detectable"].empty


def test_headlines_follow_the_tables():
    rows = lambda metric, set_name, score: [dict(augment="none", oe="baseline", seed=1, metric=metric, set=set_name,
                                                 score=score, value=0.5, source="x")]
    det = pd.DataFrame(rows("auroc", "gaussian", "msp") + rows("fpr95", "gaussian", "msp") + rows("auroc", "negated", "energy"))
    cal = pd.DataFrame(rows("ece", "id_test", "uncalibrated"))
    got = [(h["metric"], h["set"], h["score"]) for h in headlines({"detection": (det, "d"), "calibration": (cal, "c")})]
    assert got == [("auroc", "gaussian", "msp"), ("auroc", "negated", "energy"),
                   ("ece", "id_test", "uncalibrated"), ("ece", "id_test", "temperature_scaled")]
    cal_c = pd.concat([cal, pd.DataFrame(rows("accuracy", "mnist_c", "uncalibrated"))])
    got = [(h["metric"], h["set"], h["score"]) for h in headlines({"calibration": (cal_c, "c")})]
    assert ("accuracy", "mnist_c", "") in got and ("ece", "mnist_c", "temperature_scaled") in got


def _logits(correct_flags, confidence_logit=3.0, n_classes=3):
    """Logits whose top-1 prediction is right where flagged (labels all 0)."""
    z = np.zeros((len(correct_flags), n_classes), np.float32)
    for i, ok in enumerate(correct_flags):
        z[i, 0 if ok else 1] = confidence_logit
    return z


def _one_seed_model(root, augment, oe, id_correct, id_scores, ood_scores, corruptions):
    logits = os.path.join(root, "logits", augment, oe, "seed1")
    save_npz_atomic(os.path.join(logits, "id_test.npz"), logits=_logits(id_correct), labels=np.zeros(len(id_correct), np.int64),
                    features=np.zeros((len(id_correct), 2), np.float32))
    for name, flags in corruptions.items():
        save_npz_atomic(os.path.join(logits, f"mnistc_{name}.npz"), logits=_logits(flags, 1.0),
                        labels=np.zeros(len(flags), np.int64))
    save_npz_atomic(os.path.join(root, "scores", augment, oe, "seed1", "gaussian", "msp.npz"),
                    id_scores=id_scores, ood_scores=ood_scores)


def test_one_seed_bootstraps_over_examples_and_says_it_is_untested(tmp_path):
    root = str(tmp_path)
    rng = np.random.default_rng(0)
    base_id, model_id = rng.random(200) < 0.7, rng.random(200) < 0.9
    base_scores = (rng.normal(size=200), rng.normal(0.5, 1, 150))
    model_scores = (rng.normal(size=200), rng.normal(2.0, 1, 150))
    _one_seed_model(root, "none", "baseline", base_id, *base_scores, {"fog": [1, 0, 1, 1], "blur": [1, 1]})
    _one_seed_model(root, "none", "oe", model_id, *model_scores, {"fog": [1, 1, 1, 1], "blur": [0, 1]})
    rows = lambda metric, set_name, score, value=0.0: [
        dict(augment="none", oe=o, seed=1, metric=metric, set=set_name, score=score, value=value, source="t")
        for o in ("baseline", "oe")]
    acc = pd.DataFrame(rows("accuracy", "id_test", ""))          # deliberately wrong values: the files decide
    det = pd.DataFrame(rows("auroc", "gaussian", "msp"))
    cal = pd.DataFrame(rows("accuracy", "mnist_c", "uncalibrated")
                       + [r for s in ("id_test", "mnist_c") for v in ("uncalibrated", "temperature_scaled")
                          for r in rows("ece", s, v)]
                       + [dict(r, value=t) for r, t in zip(rows("temperature", "id_val", "temperature_scaled"), (2.0, 0.5))]
                       + rows("accuracy", "mnistc_fog", "uncalibrated") + rows("accuracy", "mnistc_blur", "uncalibrated"))
    tables = {"accuracy": (acc, "a.csv"), "detection": (det, "d.csv"), "calibration": (cal, "c.csv")}
    out = compare_study(tables, os.path.join(root, "logits"), os.path.join(root, "scores"), n_boot=200)
    df = out["differences"]
    rows_by = {(r["metric"], r["set"], r["score"]): r for r in df[df.family.str.startswith("table/")].to_dict("records")}
    assert set(rows_by) == {("accuracy", "id_test", ""), ("auroc", "gaussian", "msp"), ("accuracy", "mnist_c", ""),
                            ("ece", "id_test", "uncalibrated"), ("ece", "id_test", "temperature_scaled"),
                            ("ece", "mnist_c", "uncalibrated"), ("ece", "mnist_c", "temperature_scaled")}
    assert (df["verdict"] == "untested (one seed)").all() and (df["se_seeds"] == 0).all()
    assert df["method"].str.contains("one seed: training randomness not covered").all()
    assert (df["n_seeds"] == 1).all() and out["detectable"]["mdd"].isna().all()
    assert (df["low"] <= df["diff"]).all() and (df["diff"] <= df["high"]).all()
    assert rows_by[("accuracy", "id_test", "")]["diff"] == pytest.approx(model_id.mean() - base_id.mean())
    assert rows_by[("accuracy", "id_test", "")]["n_examples"] == 200
    auroc_row = rows_by[("auroc", "gaussian", "msp")]
    assert auroc_row["diff"] == pytest.approx(auroc(*model_scores) - auroc(*base_scores)) and auroc_row["low"] > 0
    # MNIST-C accuracy: mean over corruptions (fog 1 vs 3/4, blur 1/2 vs 1), pooled would differ
    assert rows_by[("accuracy", "mnist_c", "")]["diff"] == pytest.approx((1 + 0.5) / 2 - (0.75 + 1) / 2)
    assert rows_by[("accuracy", "mnist_c", "")]["n_examples"] == 6
    # ECE after scaling uses each model's own temperature from calibration.csv
    conf = lambda flags, logit, t: np.full(len(flags), np.exp(logit / t) / (np.exp(logit / t) + 2))
    expected = ece(conf(model_id, 3.0, 0.5), model_id) - ece(conf(base_id, 3.0, 2.0), base_id)
    assert rows_by[("ece", "id_test", "temperature_scaled")]["diff"] == pytest.approx(expected)


def test_missing_per_example_scores_name_the_rule(study, tmp_path):
    results, tables, _ = study
    with pytest.raises(FileNotFoundError, match="msp.npz is missing. Rerun the same snakemake command"):
        compare_study({"detection": tables["detection"]}, str(tmp_path), str(tmp_path), n_boot=20)


def test_command_line_writes_both_csvs(study, tmp_path):
    results, _, out = study
    main(["--tables", os.path.join(results, "tables"), "--logits", os.path.join(results, "logits"),
          "--scores", os.path.join(results, "scores"), "--n-boot", "100", "--out", str(tmp_path / "differences.csv"),
          "--detectable-out", str(tmp_path / "detectable.csv")])
    df = pd.read_csv(tmp_path / "differences.csv", keep_default_na=False, na_values=[""])
    assert len(df) == len(out["differences"]) and np.allclose(df["p_holm"], out["differences"]["p_holm"])
    assert len(pd.read_csv(tmp_path / "detectable.csv")) == len(out["detectable"])


def test_ranks_of_models_scores_and_corruptions(study):
    df = rank_tables(study[1])
    assert set(df["comparison"]) == {"models_ood", "scores_ood", "models_mnistc"}
    models = df[df.comparison == "models_ood"]
    assert len(models) == 4 and (models["n_blocks"] == 2).all() and models["mean_rank"].sum() == pytest.approx(10)
    assert models["cd"].iloc[0] == pytest.approx(stats.nemenyi_cd(4, 2))
    # the synthetic models improve with the augmentation and with OE: saltpepper/oe ranks first on every set
    assert models.set_index("item")["mean_rank"]["saltpepper/oe"] == 1.0
    assert (df[df.comparison == "scores_ood"]["k"] == 2).all() and df[df.comparison == "scores_ood"]["p"].isna().all()
    assert (df[df.comparison == "models_mnistc"]["blocks"] == "fog;shear").all()


def test_command_line_reads_the_logits_and_scores_beside_the_tables_by_default(tmp_path, monkeypatch):
    write_study(str(tmp_path), augments=("none",), oes=("baseline", "oe"), seeds=(1,), ood_sets=("gaussian",),
                scores=("msp",), corruptions=("fog",), n_test=50, n_ood=40, n_corrupted=30)
    monkeypatch.chdir(tmp_path)
    main(["--tables", "results/tables", "--out", "differences.csv", "--detectable-out", "detectable.csv",
          "--n-boot", "20"])
    sources = set(pd.read_csv(tmp_path / "differences.csv")["source"])
    assert "results/logits/none/oe/seed1/id_test.npz;results/logits/none/baseline/seed1/id_test.npz" in sources
    assert "results/scores/none/oe/seed1/gaussian/msp.npz;results/scores/none/baseline/seed1/gaussian/msp.npz" in sources


def test_the_default_folders_are_the_tables_siblings_however_tables_is_named(tmp_path, monkeypatch):
    seen = []

    def record_folders(tables, logits_root, scores_root, score, **options):
        seen.append((logits_root, scores_root))
        return {"differences": pd.DataFrame(columns=DIFFERENCE_COLUMNS), "detectable": pd.DataFrame(columns=DETECTABLE_COLUMNS)}
    monkeypatch.setattr("lib.evaluate.differences.compare_study", record_folders)
    (tmp_path / "results" / "tables").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "results" / "tables")
    out = ["--out", str(tmp_path / "differences.csv"), "--detectable-out", str(tmp_path / "detectable.csv")]
    for tables in (str(tmp_path / "results" / "tables"), ".", "../tables/"):
        main(["--tables", tables, *out])
    monkeypatch.chdir(tmp_path)
    main(["--tables", "results/tables", *out])
    absolute = (str(tmp_path / "results" / "logits"), str(tmp_path / "results" / "scores"))
    assert seen == [absolute] * 2 + [("../logits", "../scores"), ("results/logits", "results/scores")]
