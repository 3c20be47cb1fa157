"""lib.layout: one path per file of a run, as a rule pattern or for one model, under any results folder."""
import pytest

from lib import layout

MODEL = dict(augment="pixmix", oe="oe_tune", seed=3)


def test_a_models_files_under_the_default_results_folder():
    assert layout.model_file(**MODEL) == "results/models/pixmix/oe_tune/seed3/model.pt"
    assert layout.train_log_file(**MODEL) == "results/models/pixmix/oe_tune/seed3/train_log.csv"
    assert layout.checkpoint_file(**MODEL) == "results/checkpoints/pixmix/oe_tune/seed3.pt"
    assert layout.logits_file("id_val", **MODEL) == "results/logits/pixmix/oe_tune/seed3/id_val.npz"
    assert layout.mahalanobis_stats_file(**MODEL) == "results/logits/pixmix/oe_tune/seed3/mahalanobis_stats.npz"
    assert layout.score_file("gaussian", "energy", **MODEL) == "results/scores/pixmix/oe_tune/seed3/gaussian/energy.json"
    assert layout.metrics_file("calibration", **MODEL) == "results/metrics/pixmix/oe_tune/seed3/calibration.json"


def test_study_wide_files():
    assert layout.data_file("digits") == "results/data/digits.npz"
    assert layout.fetched_record("kmnist") == "results/data/fetched/kmnist.json"
    assert layout.corruption_file("fog") == "results/data/corruptions/fog.npz"
    assert layout.mixing_file() == "results/data/mixing.npz"
    assert layout.table_file("leaks.json") == "results/tables/leaks.json"
    assert layout.log_file("compare") == "results/logs/compare.log"
    assert layout.benchmark_file("train/none/baseline/seed1") == "results/benchmarks/train/none/baseline/seed1.tsv"
    assert layout.report_file() == "results/report.html"


def test_left_out_wildcards_make_the_rule_pattern_that_formats_back_to_the_path():
    pattern = layout.score_file()
    assert pattern == "results/scores/{augment}/{oe}/seed{seed}/{ood_set}/{score}.json"
    assert pattern.format(ood_set="gaussian", score="msp", **MODEL) == layout.score_file("gaussian", "msp", **MODEL)
    for path_of in (layout.model_file, layout.checkpoint_file, layout.logits_dir, layout.mahalanobis_stats_file):
        assert path_of().format(**MODEL) == path_of(**MODEL)
    assert layout.logits_file("{ood_set}") == "results/logits/{augment}/{oe}/seed{seed}/{ood_set}.npz"


@pytest.mark.parametrize("results, expected", [("/runs/a/results", "/runs/a/results/models/none/baseline/seed1"),
                                               ("", "models/none/baseline/seed1"),
                                               ("results/", "results/models/none/baseline/seed1")])
def test_any_results_folder(results, expected):
    assert layout.model_dir("none", "baseline", 1, results=results) == expected


def test_mnistc_set_names_and_back():
    assert layout.mnistc_set("shot_noise") == "mnistc_shot_noise"
    assert layout.corruption_of(layout.mnistc_set("shot_noise")) == "shot_noise"
    assert layout.corruption_of("id_test") is None and layout.corruption_of("mnist_c") is None


def test_files_inside_a_given_folder():
    folder = layout.logits_dir("none", "baseline", 1)
    assert layout.npz_in(folder, "gaussian") == layout.logits_file("gaussian", "none", "baseline", 1)
    assert f"{layout.logits_root()}/{layout.model_part('none', 'baseline', 1)}" == folder
