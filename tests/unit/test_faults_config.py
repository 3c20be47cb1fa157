"""Fault injection, config: every bad config stops before any job runs, with one message that
names the key and the fix. Each case goes through lib.config (the validator the Snakefile
calls); a few also through a real `snakemake -n` (tests/workflow/test_faults_config.py).

To add a case (e.g. when a new key lands): append to BAD_CONFIGS in tests/helpers/faults.py,
with the override, the key the message must name and words of the fix it must give.
"""
from pathlib import Path

import pytest
import yaml

from lib.config import ConfigError, load_config_file, load_schema, main, merge_configs, validate_config
from tests.helpers import ROOT
from tests.helpers.faults import BAD_CONFIGS

TINY = yaml.safe_load((Path(ROOT) / "presets/tiny.yaml").read_text())


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
