"""Extension files (config key `extensions`, docs/extensions.md): a user's Python file
registers scores, augmentations, models and OOD sets by name through the registries the
built-in ones use; the config check then knows the names, and a file that clashes or fails
to import is refused with its name and the cause."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from lib.config import EXTENSION_NAMES, ConfigError, forget_extensions, load_schema, validate_config
from lib.data.registry import DATASETS, make_dataset, ood_groups
from lib.data.registry import main as registry_main
from lib.evaluate.robustness import overlapping_corruptions
from lib.evaluate.scores import SCORE_INPUTS, SCORE_NAMES, compute_score
from lib.train.augment import AUGMENT_FUNCTIONS, AUGMENTS, augment_batch
from lib.train.models import MODELS, build_model
from tests.helpers import ROOT
from tests.helpers.workflow_runs import python_env

# A toy of each kind, as a user would write it: a score, an augmentation (overlapping one
# MNIST-C corruption), a model and an OOD set.
TOY = '''
import numpy as np
import torch
from torch import nn

from lib.data.registry import register_ood_set
from lib.evaluate.scores import register_score
from lib.train.augment import register_augment
from lib.train.models import register_model


def gap(logits):
    """Minus the gap between the two largest logits."""
    top = np.sort(logits, axis=1)
    return top[:, -2] - top[:, -1]


class Tiny(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU())
        self.head = nn.Linear(16, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def stripes(seed, size):
    x = np.zeros((size, 28, 28))
    x[:, :, ::4] = np.random.default_rng(seed).uniform(0.5, 1.0, size=(size, 1, 1))
    return x


register_score("gap", gap)
register_augment("invert", lambda x, generator: 1.0 - x, overlaps=["brightness"])
register_model("tiny_mlp", Tiny)
register_ood_set("stripes", stripes, source="generated: vertical stripes")
'''


@pytest.fixture(autouse=True)
def no_extensions_left():
    """Every test starts and ends with the built-in registries only."""
    forget_extensions()
    yield
    forget_extensions()


def write(tmp_path, text, name="my_extension.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refusal(config):
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    return str(err.value)


def test_registered_names_are_found_by_name(tmp_path):
    toy = write(tmp_path, TOY)
    cfg = validate_config({"extensions": [toy], "augment": ["none", "invert"], "scores": ["msp", "gap"],
                           "ood_sets": ["gaussian", "stripes"], "train": {"model": "tiny_mlp"}})
    assert cfg["extensions"] == [toy]
    assert {key: sorted(names) for key, names in EXTENSION_NAMES.items()} == {
        "scores": ["gap"], "augment": ["invert"], "train.model": ["tiny_mlp"], "ood_sets": ["stripes"]}
    assert set(EXTENSION_NAMES["scores"].values()) == {toy}

    logits = np.array([[3.0, 1.0, 0.0], [2.0, 2.0, 0.0]])
    assert compute_score("gap", {"logits": logits}).tolist() == [-2.0, 0.0]
    assert SCORE_INPUTS["gap"] == "logits"

    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(augment_batch("invert", x, torch.Generator(), cfg), 1.0 - x)
    assert overlapping_corruptions("invert") == {"brightness"}

    model = build_model("tiny_mlp", num_classes=10)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)

    arrays = make_dataset("stripes", seed=0, size=5)
    assert arrays["x_test"].shape == (5, 28, 28) and arrays["x_test"].dtype == np.uint8
    assert arrays["x_test"][:, :, 1].max() == 0 and arrays["x_test"][:, :, 0].min() >= 127
    # its OOD group: far unless the file says otherwise, and the config's ood_groups wins
    assert ood_groups({"ood_sets": ["stripes"]}) == {"stripes": "far"}
    assert ood_groups({"ood_sets": ["stripes"], "ood_groups": {"stripes": "near"}}) == {"stripes": "near"}
    assert (arrays["y_test"] == -1).all()
    assert DATASETS["stripes"]["source"] == "generated: vertical stripes"


def test_an_ood_set_with_an_unknown_group_is_refused(tmp_path):
    bad = write(tmp_path, "from lib.data.registry import register_ood_set\n"
                          "register_ood_set('dots', lambda seed, size: 0, source='x', group='middle')\n")
    assert "group 'middle' is not one of near, far" in refusal({"extensions": [bad]})


def test_the_prepare_command_loads_the_extension(tmp_path):
    # `python -m lib.data.registry NAME --extension FILE`, as the prepare_dataset rule runs it
    toy = write(tmp_path, TOY)
    registry_main(["stripes", "--out", str(tmp_path / "stripes.npz"), "--seed", "3", "--size", "7",
                   "--extension", toy])
    with np.load(tmp_path / "stripes.npz") as saved:
        assert saved["x_test"].shape == (7, 28, 28)


def test_a_score_of_the_features(tmp_path):
    ext = write(tmp_path, "import numpy as np\nfrom lib.evaluate.scores import register_score\n"
                          "register_score('feature_norm', lambda f: np.linalg.norm(f, axis=1), needs='features')\n")
    validate_config({"extensions": [ext], "scores": ["feature_norm"]})
    features = np.array([[3.0, 4.0], [0.0, 1.0]])
    assert compute_score("feature_norm", {"features": features}).tolist() == [5.0, 1.0]
    with pytest.raises(KeyError, match="score 'feature_norm' needs 'features'"):
        compute_score("feature_norm", {"logits": features})


def test_the_config_command_loads_the_extensions(tmp_path):
    # `python -m lib.config FILE`: the names a listed file registers are allowed there too
    toy = write(tmp_path, TOY)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"extensions": [toy], "scores": ["msp", "gap"], "augment": ["invert"]}))
    done = subprocess.run([sys.executable, "-m", "lib.config", str(study)], capture_output=True, text=True,
                          cwd=ROOT, env=python_env(), timeout=120)
    assert done.returncode == 0 and "config OK" in done.stdout, done.stdout + done.stderr


def test_loading_twice_registers_once(tmp_path):
    toy = write(tmp_path, TOY)
    validate_config({"extensions": [toy], "scores": ["gap"]})
    validate_config({"extensions": [toy], "scores": ["gap"]})  # the Snakefile and a job in one process
    assert list(EXTENSION_NAMES["scores"]) == ["gap"]


def test_config_check_accepts_a_registered_name_and_refuses_an_unknown_one(tmp_path):
    toy = write(tmp_path, TOY)
    message = refusal({"extensions": [toy], "scores": ["msp", "gapp"]})
    assert "config key 'scores[1]': 'gapp' is not allowed" in message
    assert "msp, xent" in message and "gap" in message  # the allowed values list the registered name
    message = refusal({"extensions": [toy], "train": {"model": "tiny_mpl"}})
    assert "'train.model'" in message and "tiny_mlp" in message
    # without the file, its names are unknown
    forget_extensions()
    assert "'gap' is not allowed" in refusal({"scores": ["gap"]})
    assert "'invert' is not allowed" in refusal({"augment": ["invert"]})
    assert "'stripes' is not allowed" in refusal({"ood_sets": ["stripes"]})


@pytest.mark.parametrize("line, words", [
    ("from lib.evaluate.scores import register_score\nregister_score('msp', lambda z: -z.max(axis=1))",
     ["line 2", "score 'msp' clashes with the built-in score"]),
    ("from lib.train.augment import register_augment\nregister_augment('pixmix', lambda x, g: x)",
     ["line 2", "augmentation 'pixmix' clashes with the built-in augmentation"]),
    ("from lib.train.models import register_model\nregister_model('convnet', lambda n: None)",
     ["line 2", "model 'convnet' clashes with the built-in model"]),
    ("from lib.data.registry import register_ood_set\nregister_ood_set('fashion_mnist', lambda seed, size: 0, "
     "source='x')", ["line 2", "OOD set 'fashion_mnist' clashes with the built-in OOD set"]),
    ("from lib.data.registry import register_ood_set\nregister_ood_set('id_test', lambda seed, size: 0, "
     "source='x')", ["line 2", "'id_test': the name is taken by an evaluation set"]),
    ("from lib.evaluate.scores import register_score\nregister_score('My-Score', abs)",
     ["line 2", "'My-Score' is not allowed", "lower-case letters"]),
    ("from lib.train.augment import register_augment\nregister_augment('blur', lambda x, g: x, overlaps=['fogg'])",
     ["line 2", "must list MNIST-C corruptions (unknown: fogg)"]),
])
def test_a_clash_is_refused_naming_the_file(tmp_path, line, words):
    bad = write(tmp_path, line + "\n", "clash.py")
    message = refusal({"extensions": [bad]})
    assert message.startswith(f"extension {bad}, line 2: ")
    for word in words:
        assert word in message


def test_two_files_with_one_name_name_the_first(tmp_path):
    first = write(tmp_path, "from lib.evaluate.scores import register_score\nregister_score('gap', abs)\n", "a.py")
    second = write(tmp_path, "from lib.evaluate.scores import register_score\nregister_score('gap', abs)\n", "b.py")
    message = refusal({"extensions": [first, second]})
    assert message.startswith(f"extension {second}, line 2: ")
    assert f"score 'gap' is already registered by {first}" in message


@pytest.mark.parametrize("text, words", [
    ("import numpy\ndef broken(:\n    pass\n", ["syntax error at line 2"]),
    ("x = 1\nraise RuntimeError('needs a GPU')\n", ["line 2", "importing it failed", "RuntimeError: needs a GPU"]),
    ("import numpy\nimport not_a_module_anywhere\n", ["line 2", "ModuleNotFoundError",
                                                      "'not_a_module_anywhere'"]),
])
def test_an_import_failure_is_refused_naming_the_file(tmp_path, text, words):
    bad = write(tmp_path, text, "broken.py")
    message = refusal({"extensions": [bad], "scores": ["msp"]})
    assert message.startswith(f"extension {bad}")
    for word in words:
        assert word in message


def test_a_missing_file_or_a_wrong_type_is_refused(tmp_path):
    message = refusal({"extensions": [str(tmp_path / "nowhere.py")]})
    assert "config key 'extensions'" in message and "nowhere.py: no such file" in message
    assert "expected a list of paths" in refusal({"extensions": "my_score.py"})


def test_a_failed_file_leaves_nothing_registered_once_forgotten(tmp_path):
    half = write(tmp_path, "from lib.evaluate.scores import register_score\nregister_score('gap', abs)\n"
                           "raise ValueError('late')\n")
    refusal({"extensions": [half]})
    forget_extensions()
    assert "gap" not in SCORE_INPUTS and not EXTENSION_NAMES["scores"]


def test_bad_registered_functions_are_refused_when_used(tmp_path):
    ext = write(tmp_path, "\n".join([
        "import numpy as np",
        "from lib.evaluate.scores import register_score",
        "from lib.train.augment import register_augment",
        "from lib.data.registry import register_ood_set",
        "register_score('one_number', lambda z: np.zeros(1))",
        "register_score('nan_score', lambda z: np.full(len(z), np.nan))",
        "register_augment('shrink', lambda x, g: x[:, :, :14])",
        "register_ood_set('too_bright', lambda seed, size: np.full((size, 28, 28), 2.0), source='x')",
    ]) + "\n")
    validate_config({"extensions": [ext]})
    logits = np.zeros((3, 10))
    with pytest.raises(ValueError, match=r"score 'one_number' returned shape \(1,\) for 3 examples"):
        compute_score("one_number", {"logits": logits})
    with pytest.raises(ValueError, match="score 'nan_score' returned 3 non-finite values"):
        compute_score("nan_score", {"logits": logits})
    with pytest.raises(ValueError, match="augmentation 'shrink' returned .* same shape"):
        augment_batch("shrink", torch.rand(2, 1, 28, 28), torch.Generator(), {})
    with pytest.raises(ValueError, match=r"OOD set 'too_bright'.*outside \[0, 1\]"):
        make_dataset("too_bright", seed=0, size=2)


def test_a_model_without_features_is_refused_when_built(tmp_path):
    ext = write(tmp_path, "from torch import nn\nfrom lib.train.models import register_model\n"
                          "register_model('plain', lambda n: nn.Linear(784, n))\n")
    validate_config({"extensions": [ext], "train": {"model": "plain"}})
    with pytest.raises(ValueError, match="model 'plain' built Linear.*missing: features, head"):
        build_model("plain")


def test_the_schema_lists_the_built_in_names_of_each_registry():
    schema = load_schema()["properties"]
    assert schema["scores"]["items"]["enum"] == list(SCORE_NAMES) == list(SCORE_INPUTS)
    assert schema["augment"]["items"]["enum"] == list(AUGMENTS) == list(AUGMENT_FUNCTIONS)
    assert schema["train"]["properties"]["model"]["enum"] == list(MODELS)
    generated_or_test = {n for n, d in DATASETS.items() if d["role"] == "ood" or "test" in d.get("splits", ())}
    assert set(schema["ood_sets"]["items"]["enum"]) == generated_or_test - {"digits"}
