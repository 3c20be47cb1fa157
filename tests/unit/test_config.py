"""Config validation: every bad config stops with one message naming the key; the shipped
presets hold what they promise."""
import pytest

from lib.config import ConfigError, load_config_file, validate_config
from tests.helpers import ROOT

BAD = [
    ({"augment": ["none", "pixmx"]}, "augment[1]", "pixmx", "saltpepper"),
    ({"scores": ["msq"]}, "scores[0]", "msq", "xent"),
    ({"ood_sets": ["gausian"]}, "ood_sets[0]", "gausian", "gaussian"),
    ({"colour": "blue"}, "colour", "unknown key", "augment"),
    ({"train": {"epoch": 3}}, "train.epoch", "unknown key", "epochs"),
    ({"train": {"epochs": -1}}, "train.epochs", "-1", "minimum 1"),
    ({"train": {"epochs": "ten"}}, "train.epochs", "'ten'", "integer"),
    ({"seeds": [1, "two"]}, "seeds[1]", "'two'", "integer"),
    ({"augment": []}, "augment", "empty", "at least 1"),
    ({"outlier_exposure": {"lambda": -0.5}}, "outlier_exposure.lambda", "-0.5", "minimum 0"),
    ({"pixmix": {"beta": 0}}, "pixmix.beta", "0", "exclusiveMinimum 0"),
    ({"pixmix": {"k": -1}}, "pixmix.k", "-1", "minimum 0"),
    ({"train": {"model": "resnet"}}, "train.model", "resnet", "convnet"),
    ({"data_dir": "data; rm -rf ~"}, "data_dir", "not allowed", "letters"),
    ({"oe": ["oe_tune"]}, "oe", "baseline", "oe_tune"),
    ({"seeds": [1, 1]}, "seeds", "twice", "[1, 1]"),
    ({"in_distribution": "fashion_mnist", "corruptions": "official"}, "corruptions", "corrupted MNIST",
     "'fashion_mnist'", "corruptions: generated"),
    ({"corruptions": "official"}, "corruptions", "'digits'", "corruptions: generated"),
]


@pytest.mark.parametrize("bad, key, words", [(b[0], b[1], b[2:]) for b in BAD], ids=[b[1] for b in BAD])
def test_bad_config_names_key_value_and_fix(bad, key, words):
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    message = str(err.value)
    assert f"'{key}'" in message
    for word in words:
        assert word in message


def test_defaults_are_filled_and_shipped_files_validate():
    cfg = validate_config({})
    assert cfg["outlier_exposure"]["lambda"] == 0.5 and cfg["outlier_exposure"]["batch_factor"] == 2
    base = load_config_file(f"{ROOT}/config.yaml")
    validate_config(base)
    for preset in ("demo", "tiny"):
        validate_config({**base, **load_config_file(f"{ROOT}/presets/{preset}.yaml")})


@pytest.mark.parametrize("in_distribution, source", [("mnist", "official"), ("fashion_mnist", "generated"),
                                                     ("kmnist", "generated"), ("digits", "generated")])
def test_auto_corruptions_are_the_official_sets_for_mnist_alone(in_distribution, source):
    assert validate_config({"in_distribution": in_distribution})["corruptions"] == source
    assert validate_config({"in_distribution": in_distribution, "corruptions": "auto"})["corruptions"] == source
    assert validate_config({"in_distribution": in_distribution, "corruptions": "generated"})["corruptions"] == \
        "generated"


def test_every_config_key_is_commented():
    with open(f"{ROOT}/config.yaml") as f:
        lines = [l for l in f if l.strip() and not l.lstrip().startswith("#")]
    uncommented = [l.rstrip() for l in lines if "#" not in l and not l.rstrip().endswith(":")]
    assert not uncommented, uncommented  # section headers hold no value
    for key in ("offline:", "data_sources:", "count:", "shares_source_with:"):  # the data keys are there
        assert any(l.lstrip().startswith(key) for l in lines), key


def test_yaml_syntax_error_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config_file(str(bad))


def test_demo_preset_trains_all_three_augments_on_a_small_fractal_set():
    cfg = load_config_file(f"{ROOT}/presets/demo.yaml")
    assert cfg["augment"] == ["none", "saltpepper", "pixmix"]
    assert cfg["pixmix"]["mixing"] == {"source": "fractals", "count": 1000}
    seed_study = load_config_file(f"{ROOT}/presets/seed-study.yaml")
    assert seed_study["augment"] == ["none", "saltpepper", "pixmix"]
