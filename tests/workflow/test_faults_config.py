"""Fault injection, config, through the real workflow: `snakemake -n` stops while parsing a
bad config, before any job or output folder exists, with lib.config's message (the cases are
BAD_CONFIGS of tests/helpers/faults.py; tests/unit/test_faults_config.py checks them all).
"""
import subprocess

import pytest

from tests.helpers.faults import BAD_CONFIGS, files_under, write_study_config
from tests.helpers.workflow_runs import snakemake_command

# Started together: each one spends seconds importing.
SNAKEMAKE_CASES = ["unknown_key", "unknown_augment", "negative_epochs", "shell_in_data_dir",
                   "validation_set_is_a_test_set"]


def _snakemake_dry_run(workdir, configfile):
    cmd = snakemake_command(workdir, configfile, "-n", profile=None)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dry_runs")
    started = {}
    for case in SNAKEMAKE_CASES:
        override = BAD_CONFIGS[case][0]
        study = write_study_config(root / case / "cfg", **override)
        started[case] = (root / case / "run", _snakemake_dry_run(root / case / "run", study))
    # A YAML syntax error in the workflow's own config.yaml (the one read without --configfile).
    yaml_run = root / "yaml_syntax" / "run"
    yaml_run.mkdir(parents=True)
    (yaml_run / "config.yaml").write_text("augment: [none\nseeds: [1]\n")
    started["yaml_syntax"] = (yaml_run, _snakemake_dry_run(yaml_run, None))
    # The same in a --configfile, which Snakemake reads before the workflow's code runs.
    preset = root / "yaml_syntax_configfile" / "preset.yaml"
    preset.parent.mkdir()
    preset.write_text("augment: [none\nseeds: [1]\n")
    started["yaml_syntax_configfile"] = (preset.parent / "run", _snakemake_dry_run(preset.parent / "run", preset))
    return {case: (run, proc.communicate(timeout=300)[0], proc.returncode)
            for case, (run, proc) in started.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", SNAKEMAKE_CASES)
def test_snakemake_stops_before_any_job_with_the_message(dry_runs, case):
    run, output, returncode = dry_runs[case]
    _, key, fix_words = BAD_CONFIGS[case]
    assert returncode != 0
    assert "invalid config:" in output and f"config key {key}" in output, output
    assert all(words in output for words in fix_words), output
    assert "Job stats" not in output and "rule " not in output
    assert files_under(run / "results") == []


@pytest.mark.slow
def test_snakemake_names_file_and_line_of_a_yaml_syntax_error(dry_runs):
    run, output, returncode = dry_runs["yaml_syntax"]
    assert returncode != 0
    assert "config.yaml is not valid YAML" in output and "line 2" in output, output
    assert files_under(run / "results") == []


@pytest.mark.slow
def test_snakemake_stops_on_a_yaml_syntax_error_in_a_configfile(dry_runs):
    # Snakemake's own message, which names neither file nor line (hence `python -m lib.config FILE`).
    run, output, returncode = dry_runs["yaml_syntax_configfile"]
    assert returncode != 0 and "is not valid JSON or YAML" in output, output
    assert files_under(run / "results") == []
