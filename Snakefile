# mnist-safety: what PixMix, salt-and-pepper noise and Outlier Exposure buy an MNIST
# classifier. Entry point: config, validation, includes, the final target.
#
#   snakemake -n                                   # the plan of the default study
#   snakemake --profile profiles/local --configfile presets/demo.yaml
#   snakemake --cores 4 --configfile presets/demo.yaml   # no profile: profiles/default still applies
#   snakemake --profile profiles/slurm             # on a SLURM cluster

import os
import sys

sys.path.insert(0, workflow.basedir)  # lib/ lives beside this file, wherever -d points

from snakemake.exceptions import WorkflowError
from lib.config import ConfigError, load_config_file, merge_configs, parse_command_line_config, validate_config
from lib.data.registry import config_problems_with_data

# Snakemake's own message for a YAML syntax error names neither the file nor the line.
# (A broken --configfile fails inside Snakemake before this file runs: `python -m lib.config FILE`.)
if os.path.exists("config.yaml"):
    try:
        load_config_file("config.yaml")
    except ConfigError as error:
        raise WorkflowError(str(error)) from None


configfile: os.path.join(workflow.basedir, "config.yaml")


try:
    # Snakemake leaves `--config` values inside lists and mappings, and `true`, as text; the
    # entries as typed (`config_args`, None when called from Python) are read again as YAML.
    config = merge_configs(config, parse_command_line_config(workflow.config_settings.config_args))
    config = validate_config(config)
    if problems := config_problems_with_data(config):
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
except ConfigError as error:
    raise WorkflowError(str(error)) from None


def guard_slurm_status_queries():
    """Status queries that cannot hang on a cancelled, preempted or forgotten SLURM job
    (workflow/slurm_status.py, loaded by path: a `workflow` package would hide Snakemake's
    `workflow`). Called from onstart: the executor is known only once the run starts, and
    only the Snakemake that submits the jobs runs onstart and polls their states."""
    import importlib.util
    import snakemake_executor_plugin_slurm

    spec = importlib.util.spec_from_file_location(
        "mnist_safety_slurm_status", os.path.join(workflow.basedir, "workflow", "slurm_status.py"))
    guard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guard)
    try:
        guard.install(snakemake_executor_plugin_slurm)
    except RuntimeError as error:
        raise WorkflowError(str(error)) from None


onstart:
    if getattr(workflow.executor_plugin, "name", None) == "slurm":
        guard_slurm_status_queries()
    # Only once the run starts is it known whether jobs run on this machine or are sent to a
    # cluster's GPU nodes; a missing GPU here is then said before any job, not in a job's log.
    gpu_jobs = [j for j in workflow.dag.needrun_jobs() if j.rule.name in ("train", "evaluate")]
    if config["train"]["device"] == "cuda" and workflow.local_exec and gpu_jobs:
        from lib.common import missing_cuda

        if problem := missing_cuda():
            raise WorkflowError(f"invalid config:\n  {problem}")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pixmix.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/report.smk"


def every_file_of_the_study():
    """Every file the report is computed from, down to the prepared data sets.

    Snakemake plans a job with missing outputs only when a job it feeds has to run; after
    an intermediate file is deleted while the files computed from it are still there, it
    says "Nothing to be done". Asked for here as well, a deleted file is rebuilt by the
    same command, and everything computed from it after it (docs/failure-modes.md).
    """
    trains_oe = any(o in ("oe", "oe_tune") for o in OES)
    sets = list(dict.fromkeys([ID, *OOD_SETS, *VALIDATION_OOD_SETS, *([OE_SOURCE] if trains_oe else [])]))
    fetched = [layout.fetched_record(name) for name in sets if name in REAL_SETS]
    if config["corruptions"] == "official":
        fetched.append(layout.fetched_record("mnist_c"))
    per_model = [layout.model_file(), layout.mahalanobis_stats_file(), layout.posthoc_stats_file(),
                 layout.hyperparameters_file(),
                 *(layout.logits_file(name) for name in EVAL_SETS + MNISTC_SETS),
                 *(layout.metrics_file(kind) for kind in ("accuracy", "calibration", "robustness", "full_spectrum")),
                 *(layout.score_file(o, s) for o in OOD_SETS for s in SCORES),
                 *(layout.example_scores_file(o, s) for o in OOD_SETS for s in SCORES)]
    tables = [layout.table_file(name) for name in (
        "leaks.json", "accuracy.csv", "detection.csv", "robustness.csv", "robustness_summary.csv",
        "calibration.csv", "reliability.csv", "differences.csv", "detectable.csv", "ranks.csv", "full_spectrum.csv",
        "detection_groups.csv", "full_spectrum_groups.csv")]
    return ([layout.data_file(name) for name in sets] + fetched + [layout.corruption_file(c) for c in CORRUPTIONS]
            + [layout.shifted_file()]
            + ([layout.mixing_file()] if "pixmix" in AUGMENTS else []) + [f for pattern in per_model for f in expand_models(pattern)]
            + [layout.train_log_file(**m) for m in trained_models()] + tables)  # external checkpoints have no train log


rule all:
    input:
        report=layout.report_file(),
        study=every_file_of_the_study(),
