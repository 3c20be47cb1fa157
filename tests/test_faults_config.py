"""Fault injection, config: every bad config stops before any job runs, with one message that
names the key and the fix. Each case goes through lib.config (the validator the Snakefile
calls); a few also through a real `snakemake -n`.

To add a case (e.g. when a new key lands): append to BAD_CONFIGS, with the override, the
key the message must name and words of the fix it must give.
"""
import subprocess
from pathlib import Path

import pytest
import yaml

from lib.config import ConfigError, load_config_file, load_schema, main, merge_configs, validate_config
from tests.faults import files_under, write_study_config
from tests.workflow import ROOT, SNAKEMAKE

TINY = yaml.safe_load((Path(ROOT) / "presets/tiny.yaml").read_text())


# id -> (override of the tiny preset, key named in the message, words of the fix)
BAD_CONFIGS = {
    "unknown_key": ({"epochs": 3}, "'epochs'", ["unknown key at the top level", "did you mean 'train.epochs'?",
                                                "allowed keys"]),
    "unknown_nested_key": ({"train": {"epoch": 3}}, "'train.epoch'", ["unknown key under 'train'",
                                                                      "did you mean 'epochs'?"]),
    "wrong_type": ({"train": {"lr": "fast"}}, "'train.lr'", ["wrong type", "expected number"]),
    "negative_epochs": ({"train": {"epochs": -1}}, "'train.epochs'", ["out of range", "minimum 1"]),
    "empty_augment": ({"augment": []}, "'augment'", ["the list is empty", "at least 1"]),
    "augment_not_a_list": ({"augment": "none"}, "'augment'", ["wrong type", "expected array"]),
    "unknown_augment": ({"augment": ["none", "pixmx"]}, "'augment[1]'", ["'pixmx' is not allowed", "none, saltpepper"]),
    "unknown_score": ({"scores": ["msp", "msq"]}, "'scores[1]'", ["'msq' is not allowed", "msp, xent"]),
    "unknown_ood_set": ({"ood_sets": ["gaussian", "fashion"]}, "'ood_sets[1]'", ["'fashion' is not allowed", "negated"]),
    "oe_source_missing": ({"oe": ["oe"], "outlier_exposure": {"source": None}}, "'outlier_exposure.source'",
                          ["wrong type", "one of: jigsaw"]),
    "seed_not_integer": ({"seeds": [1, 2.5]}, "'seeds[1]'", ["wrong type", "expected integer"]),
    "seeds_as_text": ({"seeds": "1,2"}, "'seeds'", ["wrong type", "expected array"]),
    "duplicate_seed": ({"seeds": [1, 1]}, "'seeds'", ["lists an entry twice"]),
    "pixmix_k_negative": ({"pixmix": {"k": -1}}, "'pixmix.k'", ["out of range", "minimum 0"]),
    "pixmix_beta_zero": ({"pixmix": {"beta": 0}}, "'pixmix.beta'", ["out of range", "exclusiveMinimum 0"]),
    "oe_tune_without_baseline": ({"oe": ["oe_tune"]}, "'oe'", ["'baseline' must be listed too"]),
    "shell_in_data_dir": ({"data_dir": "data; rm -rf ~"}, "'data_dir'", ["characters that are not allowed",
                                                                          "letters, digits"]),
    "shell_in_seed": ({"seeds": ["1; touch pwned"]}, "'seeds[0]'", ["wrong type", "expected integer"]),
}


def problems_of(message):
    """The per-problem lines of a ConfigError ('invalid config:' then one indented line each)."""
    lines = message.splitlines()
    assert lines[0] == "invalid config:", message
    return [line.strip() for line in lines[1:]]


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_gives_one_message_naming_key_and_fix(case):
    override, key, fix_words = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as err:
        validate_config(merge_configs(TINY, override))
    problems = problems_of(str(err.value))
    assert len(problems) == 1, problems
    assert f"config key {key}" in problems[0]
    for words in fix_words:
        assert words in problems[0], (words, problems[0])


def test_every_case_is_distinct_and_the_preset_itself_is_valid():
    validate_config(TINY)
    assert len(BAD_CONFIGS) >= 12
    messages = set()
    for override, _, _ in BAD_CONFIGS.values():
        with pytest.raises(ConfigError) as err:
            validate_config(merge_configs(TINY, override))
        messages.add(str(err.value))
    assert len(messages) == len(BAD_CONFIGS)


def test_missing_pixmix_mixing_folder_is_named_with_the_fix(tmp_path):
    schema = load_schema()
    missing = tmp_path / "no-such-folder"
    cfg = merge_configs(TINY, {"augment": ["pixmix"], "pixmix": {"mixing": {"source": "folder", "folder": str(missing)}}})
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, schema)
    (problem,) = problems_of(str(err.value))
    assert "config key 'pixmix.mixing.folder'" in problem and str(missing) in problem
    assert "stage the mixing images there or use source: fractals" in problem
    missing.mkdir()
    assert validate_config(cfg, schema)["pixmix"]["mixing"]["folder"] == str(missing)


def test_yaml_syntax_error_names_file_line_and_fix(tmp_path, capsys):
    bad = tmp_path / "preset.yaml"
    bad.write_text("augment: [none\nseeds: [1]\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(bad)
    assert str(bad) in str(err.value) and "line 2" in str(err.value) and "Fix the line" in str(err.value)
    assert main([str(bad)]) == 1  # `python -m lib.config FILE`: the message, no traceback
    assert str(bad) in capsys.readouterr().err


def test_config_checker_merges_files_like_snakemake(tmp_path, capsys):
    # A preset that sets one key of a section keeps the other keys of the file before it.
    base, preset = tmp_path / "base.yaml", tmp_path / "preset.yaml"
    base.write_text("train: {model: small_convnet, epochs: 1}\n")
    preset.write_text("train: {epochs: -2}\n")
    assert main([str(base), str(preset)]) == 1
    err = capsys.readouterr().err
    assert "'train.epochs'" in err and "model" not in err
    preset.write_text("train: {epochs: 2}\n")
    assert main([str(base), str(preset)]) == 0
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert main([str(tmp_path / "list.yaml")]) == 1
    assert "must be a mapping" in capsys.readouterr().err


# Through the real workflow: `snakemake -n` must stop while parsing, before any job or
# output folder exists. Started together: each one spends seconds importing.
SNAKEMAKE_CASES = ["unknown_key", "unknown_augment", "negative_epochs", "shell_in_data_dir"]


def _snakemake_dry_run(workdir, configfile):
    cmd = [SNAKEMAKE, "--snakefile", str(Path(ROOT) / "Snakefile"), "-d", str(workdir), "-n"]
    if configfile:
        cmd += ["--configfile", str(configfile)]
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
