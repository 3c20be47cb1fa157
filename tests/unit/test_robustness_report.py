"""MNIST-C tables from per-model records, and the report's robustness section built from them."""
import base64
import json

import numpy as np
import pandas as pd
import pytest

from lib.evaluate.aggregate import COLUMNS
from lib.data.mnist_c import CORRUPTIONS
from lib.report.context import long_table, make_context
from lib.report.robustness import example_images, percent_text, robustness_report
from lib.report.summary import study_tables
from lib.evaluate.robustness_tables import (corruption_accuracies, read_records, robustness_job, robustness_long,
                                   robustness_summary_long, robustness_tables_job)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def logits_for(labels, correct):
    """Logits whose argmax is the label where `correct`, another class elsewhere."""
    logits = np.zeros((len(labels), 10), dtype=np.float32)
    predicted = np.where(correct, labels, (labels + 1) % 10)
    logits[np.arange(len(labels)), predicted] = 5.0
    return logits


def write_logits(path, labels, correct):
    np.savez(path, logits=logits_for(labels, correct), labels=labels.astype(np.int64))


def record(augment, oe, seed, accuracies, folder):
    path = folder / f"{augment}-{oe}-{seed}.json"
    path.write_text(json.dumps({"augment": augment, "oe": oe, "seed": seed, "corruptions": {
        c: {"accuracy": a, "n": 100, "source": f"logits/{c}.npz"} for c, a in accuracies.items()}}))
    return path


def accuracies(offset):
    return {c: min(1.0, 0.5 + 0.02 * i + offset) for i, c in enumerate(CORRUPTIONS)}


@pytest.fixture
def grid(tmp_path):
    """Records of none/baseline, saltpepper/baseline and saltpepper/oe for seeds 1 and 2."""
    paths = []
    for seed in (1, 2):
        paths.append(record("none", "baseline", seed, accuracies(0.0 + 0.01 * seed), tmp_path))
        paths.append(record("saltpepper", "baseline", seed, accuracies(0.1 + 0.01 * seed), tmp_path))
        paths.append(record("saltpepper", "oe", seed, accuracies(0.2), tmp_path))
    return paths


def test_corruption_accuracies_and_the_job_record(tmp_path):
    labels = np.arange(40) % 10
    paths = {}
    for i, c in enumerate(("fog", "stripe")):
        paths[c] = tmp_path / f"mnistc_{c}.npz"
        write_logits(paths[c], labels, np.arange(40) < 10 * (i + 1))
    assert corruption_accuracies(paths) == {"fog": (0.25, 40), "stripe": (0.5, 40)}
    out, log = tmp_path / "m/robustness.json", tmp_path / "m.log"
    robustness_job(paths, str(out), str(log), augment="none", oe="oe", seed="3")
    saved = json.loads(out.read_text())
    assert saved["seed"] == 3 and saved["augment"] == "none" and saved["oe"] == "oe"
    assert saved["corruptions"]["stripe"] == {"accuracy": 0.5, "n": 40, "source": str(paths["stripe"])}
    assert "fog: accuracy 0.2500" in log.read_text()


def test_unlabelled_corruption_set_is_refused(tmp_path):
    path = tmp_path / "mnistc_fog.npz"
    np.savez(path, logits=np.zeros((3, 10), np.float32), labels=np.array([1, -1, 2]))
    with pytest.raises(ValueError, match="fog.*unlabelled"):
        corruption_accuracies({"fog": path})


def test_long_table_has_one_accuracy_row_per_model_seed_and_corruption(grid):
    long = robustness_long(read_records(grid))
    assert list(long.columns) == COLUMNS
    assert len(long) == 6 * 15 and set(long["metric"]) == {"accuracy"} and set(long["set"]) == set(CORRUPTIONS)
    row = long[(long["augment"] == "saltpepper") & (long["oe"] == "oe") & (long["seed"] == 2)
               & (long["set"] == "fog")].iloc[0]
    assert row["value"] == pytest.approx(accuracies(0.2)["fog"])
    assert row["source"].endswith("saltpepper-oe-2.json") and row["score"] == ""


def test_summary_mce_is_relative_to_the_baseline_of_the_same_seed(grid):
    summary = robustness_summary_long(read_records(grid))
    assert list(summary.columns) == COLUMNS and set(summary["set"]) == {"mnist_c"}

    def value(augment, oe, seed, metric):
        rows = summary[(summary["augment"] == augment) & (summary["oe"] == oe) & (summary["seed"] == seed)
                       & (summary["metric"] == metric)]
        assert len(rows) == 1
        return rows.iloc[0]

    for seed in (1, 2):
        base = accuracies(0.01 * seed)
        model = accuracies(0.1 + 0.01 * seed)
        expected = np.mean([(1 - model[c]) / (1 - base[c]) for c in CORRUPTIONS if base[c] < 1])
        mce_row = value("saltpepper", "baseline", seed, "mce")
        assert mce_row["value"] == pytest.approx(expected)
        assert mce_row["source"].endswith(f"saltpepper-baseline-{seed}.json;{grid[0].parent}/none-baseline-{seed}.json")
        assert value("none", "baseline", seed, "mce")["value"] == pytest.approx(1.0)
        assert value("saltpepper", "baseline", seed, "mean_accuracy")["value"] == pytest.approx(np.mean(list(model.values())))
        unseen = [a for c, a in model.items() if c != "impulse_noise"]
        assert value("saltpepper", "baseline", seed, "non_overlap_mean")["value"] == pytest.approx(np.mean(unseen))


def test_summary_leaves_out_mce_without_a_baseline_model(tmp_path):
    records = read_records([record("saltpepper", "oe", 1, accuracies(0.0), tmp_path)])
    summary = robustness_summary_long(records)
    assert sorted(summary["metric"]) == ["mean_accuracy", "non_overlap_mean"]
    assert robustness_summary_long([]).empty


def write_tables(grid, tables):
    robustness_tables_job(grid, str(tables / "robustness.csv"), str(tables / "robustness_summary.csv"),
                          str(tables / "aggregate.log"))


def test_tables_job_writes_both_csvs(grid, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    write_tables(grid, tables)
    long = pd.read_csv(tables / "robustness.csv", keep_default_na=False)
    assert len(long) == 90 and "none" in set(long["augment"])
    assert len(pd.read_csv(tables / "robustness_summary.csv")) == 6 * 3
    assert "6 models" in (tables / "aggregate.log").read_text()


def cfg(**over):
    return {"in_distribution": "digits", "augment": ["none", "saltpepper"], "oe": ["baseline", "oe"],
            "seeds": [1, 2], "corruptions": "generated", "ood_sets": [], "scores": [], **over}


def study_mnist_c_row(config, tables):
    """The study table's MNIST-C row, as lib.report.summary builds it from robustness_summary.csv."""
    ctx = make_context(config, {"robustness_summary": str(tables / "robustness_summary.csv")}, tables.parent)
    nothing = pd.DataFrame(columns=["augment", "oe", "metric", "set", "score", "mean", "std", "n"])
    study = study_tables(config, nothing, nothing, "", "", mnist_c=long_table(ctx, "robustness_summary"))
    return study["accuracy_rows"][1]


def corruption_files(folder, labels):
    folder.mkdir(parents=True)
    for i, c in enumerate(CORRUPTIONS):
        np.savez(folder / f"{c}.npz", x_test=np.full((len(labels), 28, 28), i, np.uint8), y_test=labels)


def test_report_section_is_absent_without_tables(tmp_path):
    assert robustness_report(cfg(), str(tmp_path)) is None


def test_report_section_cells_carry_exact_means_and_mark_overlaps(grid, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    write_tables(grid, tables)
    section = robustness_report(cfg(), str(tables))
    assert section["header"] == ["Base", "Base +OE", "S&P", "S&P +OE"]
    assert [r["label"] for r in section["rows"][:15]] == list(CORRUPTIONS) and len(section["rows"]) == 18

    impulse = section["rows"][CORRUPTIONS.index("impulse_noise")]["cells"]
    assert [c["overlap"] for c in impulse] == [False, False, True, True]
    assert impulse[1]["text"] == "—" and impulse[1]["value"] == ""  # none/oe is not in the records
    sp = impulse[2]
    expected = np.mean([accuracies(0.11)["impulse_noise"], accuracies(0.12)["impulse_noise"]])
    assert float(sp["value"]) == pytest.approx(expected) and sp["source"] == str(tables / "robustness.csv")
    assert sp["text"] == percent_text(expected, np.std([accuracies(0.11)["impulse_noise"],
                                                        accuracies(0.12)["impulse_noise"]], ddof=1), 2)
    assert not any(c["overlap"] for c in section["rows"][CORRUPTIONS.index("fog")]["cells"])

    mce = section["rows"][17]["cells"]
    assert float(mce[0]["value"]) == pytest.approx(1.0) and mce[0]["source"] == str(tables / "robustness_summary.csv")
    assert section["overlaps"] == {"S&P": ["impulse_noise"], "S&P +OE": ["impulse_noise"]}

    study = study_mnist_c_row(cfg(), tables)
    assert [c["text"].endswith("(n=2)") for c in study["cells"]] == [True, True]
    base_mean = np.mean([np.mean(list(accuracies(0.01 * s).values())) for s in (1, 2)])
    assert float(study["cells"][0]["value"]) == pytest.approx(base_mean)
    assert study["cells"][0]["published"] == ""  # digits on generated corruptions: no published number
    assert "generated offline" in study["note"]
    assert base64.b64decode(section["chart_png"]).startswith(PNG_MAGIC)
    assert section["examples_png"] == ""


def test_published_number_only_for_mnist_on_the_official_set(grid, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    write_tables(grid, tables)
    study = study_mnist_c_row(cfg(in_distribution="mnist", corruptions="official"), tables)
    assert [c["published"] for c in study["cells"]] == ["82.00", "73.00"]
    assert float(study["cells"][0]["delta"]) == pytest.approx((float(study["cells"][0]["value"]) - 0.82) * 100,
                                                              abs=0.006)
    assert "official" in study["note"]


def test_example_digit_under_every_corruption(grid, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    write_tables(grid, tables)
    labels = np.array([3, 1, 4], dtype=np.int64)
    corruption_files(tmp_path / "corruptions", labels)
    id_path = tmp_path / "digits.npz"
    np.savez(id_path, x_test=np.full((3, 28, 28), 200, np.uint8), y_test=labels)

    images = example_images(str(tmp_path / "corruptions"), str(id_path))
    assert [t for t, _ in images] == ["clean", *CORRUPTIONS]
    assert images[0][1][0, 0] == 200 and [int(x[0, 0]) for _, x in images[1:]] == list(range(15))
    np.savez(id_path, x_test=np.zeros((3, 28, 28), np.uint8), y_test=labels[::-1])
    assert [t for t, _ in example_images(str(tmp_path / "corruptions"), str(id_path))] == list(CORRUPTIONS)

    section = robustness_report(cfg(), str(tables), str(tmp_path / "corruptions"), str(id_path))
    assert base64.b64decode(section["examples_png"]).startswith(PNG_MAGIC)
