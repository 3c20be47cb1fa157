"""Every file the report reads, by name: the report rule declares exactly these.

    from lib.report.inputs import report_inputs
    inputs = report_inputs(cfg, "results")
    inputs["detection"]        # 'results/tables/detection.csv'
    inputs["train_logs"]       # ['results/models/none/baseline/seed1/train_log.csv', ...]

workflow/rules/report.smk declares report_inputs(config) as the report rule's named inputs
and hands them to `python -m lib.report --inputs-json`; the report reads only those
files (lib.report.context refuses any other), so a changed table, log or data set
re-renders the report, and nothing a run left behind under results/ creeps into it.

The names: one per table (TABLES below, a path each) and the lists train_logs (every
model trained here), logits (the first seed's, and each external checkpoint's, for the figures),
hyperparameters (every model's score hyperparameters and their source, lib.evaluate.tuning),
data (the prepared sets the grid
uses, for their checksums and the sample digits), mixing (PixMix's mixing set, when
pixmix trains), corrupted (the 15 MNIST-C sets, for the example digit), fetched (the
download records of the real sets) and benchmarks (the Snakemake benchmark files of the
data, train and evaluate jobs, for the wall times).
The paths are lib.layout's, the rules' own; a path no rule writes stops the dry run with
Snakemake's "Missing input files for rule report". A section finds one of them with
lib.layout too: layout.train_log_file("none", "baseline", 1, ctx["results"]).
"""
import os

from lib import layout
from lib.data.mnist_c import CORRUPTIONS
from lib.data.registry import is_downloaded

# The tables, by input name: results/tables/<file>.
TABLES = {"accuracy": "accuracy.csv", "detection": "detection.csv", "leaks": "leaks.json",
          "robustness": "robustness.csv", "robustness_summary": "robustness_summary.csv",
          "calibration": "calibration.csv", "reliability": "reliability.csv", "differences": "differences.csv",
          "detectable": "detectable.csv", "ranks": "ranks.csv", "full_spectrum": "full_spectrum.csv",
          "detection_groups": "detection_groups.csv", "full_spectrum_groups": "full_spectrum_groups.csv"}
LISTS = ("train_logs", "logits", "hyperparameters", "data", "mixing", "corrupted", "fetched", "benchmarks")
NAMES = (*TABLES, *LISTS)


def models(cfg):
    """Every (augment, oe, seed) trained here: the grid."""
    return [(a, o, s) for a in cfg["augment"] for o in cfg["oe"] for s in cfg["seeds"]]


def external_models(cfg):
    """Every (augment, oe, seed) of a checkpoint trained elsewhere (config external_models)."""
    return [(layout.EXTERNAL_AUGMENT, name, layout.EXTERNAL_SEED) for name in cfg.get("external_models", {})]


def used_data_sets(cfg):
    """The prepared sets the grid uses: in-distribution, test OOD sets, validation OOD sets
    (the score hyperparameters are tuned on them), and the Outlier Exposure set when a model
    trains with it."""
    names = [cfg["in_distribution"], *cfg["ood_sets"], *cfg.get("validation_ood_sets", [])]
    if any(o != "baseline" for o in cfg["oe"]):
        names.append(cfg["outlier_exposure"]["source"])
    return list(dict.fromkeys(names))


def benchmark_jobs(cfg, results=layout.RESULTS):
    """[(benchmark file, an output of the job that writes it)] for the data, train and
    evaluate jobs of the grid (the `benchmark:` of their rules)."""
    def bench(name):
        return layout.benchmark_file(name, results)
    jobs = [(bench(f"data/{name}"), layout.data_file(name, results)) for name in used_data_sets(cfg)]
    if "pixmix" in cfg["augment"]:
        jobs.append((bench("data/mixing"), layout.mixing_file(results)))
    if cfg["corruptions"] == "generated":
        jobs.append((bench("data/generate_corruptions"), layout.corruption_file(CORRUPTIONS[0], results)))
    for kind, output, grid in (("train", layout.model_file, models(cfg)),
                               ("evaluate", layout.mahalanobis_stats_file, models(cfg) + external_models(cfg))):
        jobs += [(bench(f"{kind}/{layout.model_part(a, o, s)}"), output(a, o, s, results)) for a, o, s in grid]
    return jobs


def benchmark_files(cfg, results=layout.RESULTS):
    """The benchmark files to read: each one that exists, or whose job is still to run.

    A job that has run but whose benchmark file is gone (deleted, or a run with --touch)
    is left out: declared, that file would make Snakemake rerun the job (train, evaluate)
    only to write it again."""
    return [bench for bench, output in benchmark_jobs(cfg, results)
            if os.path.exists(bench) or not os.path.exists(output)]


def report_inputs(cfg, results=layout.RESULTS):
    """{name: path or [paths]} of every file the report reads, for a validated config."""
    seed = cfg["seeds"][0]
    sets = used_data_sets(cfg)
    fetched = [name for name in sets if is_downloaded(name)] + (["mnist_c"] if cfg["corruptions"] == "official" else [])
    return {
        **{name: layout.table_file(file, results) for name, file in TABLES.items()},
        "train_logs": [layout.train_log_file(a, o, s, results) for a, o, s in models(cfg)],
        # The figures draw one seed per model: curves of different seeds would hide each other.
        "logits": [layout.logits_file(name, a, o, s, results)
                   for a, o, s in [(a, o, seed) for a in cfg["augment"] for o in cfg["oe"]] + external_models(cfg)
                   for name in ("id_test", *cfg["ood_sets"])],
        "hyperparameters": [layout.hyperparameters_file(a, o, s, results)
                            for a, o, s in models(cfg) + external_models(cfg)],
        "data": [layout.data_file(name, results) for name in sets],
        "mixing": [layout.mixing_file(results)] if "pixmix" in cfg["augment"] else [],
        "corrupted": [layout.corruption_file(c, results) for c in CORRUPTIONS],
        "fetched": [layout.fetched_record(name, results) for name in fetched],
        "benchmarks": benchmark_files(cfg, results),
    }
