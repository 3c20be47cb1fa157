"""On real digits (../shared/fixtures/mnist-sample), the default model is a sound Base model:
briefly trained, it tells Gaussian and Bernoulli noise from digits at >= 99% MSP AUROC, as
published MNIST baselines do; a batch-norm model trained the same way sets off the report's
broken-baseline warning (lib/evaluate/baseline_check.py)."""
import pandas as pd
import pytest
import torch

from benchmarks.baselines import stage_mnist_sample
from lib.config import validate_config
from lib.data.real import load_real_dataset
from lib.data.registry import make_dataset
from lib.evaluate.aggregate import COLUMNS, summarize
from lib.evaluate.baseline_check import check_baseline, warning_sentences
from lib.evaluate.forward import forward_in_batches
from lib.evaluate.metrics import accuracy, auroc
from lib.evaluate.scores import msp_score
from lib.report.summary import baseline_warning
from lib.train.loop import train
from tests.helpers.shared_fixtures import MNIST_SAMPLE, needs_mnist_sample

pytestmark = needs_mnist_sample
NOISE = ("gaussian", "bernoulli")
BRIEF_EPOCHS = 4   # the default recipe otherwise; noise detection needs no long training
BN_EPOCHS = 2      # a batch-norm model is confident on noise from its first epochs on


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    sources = stage_mnist_sample(data_dir, MNIST_SAMPLE)   # pinned by the sample's sha256s
    arrays = load_real_dataset("mnist", data_dir, sources)
    assert arrays["x_train"].shape == (4000, 28, 28) and arrays["x_test"].shape == (1000, 28, 28)
    noise = {name: make_dataset(name, seed=0, size=2000)["x_test"] for name in NOISE}
    return arrays, noise


def base_model_tables(model_name, digits, tmp_path, epochs=BRIEF_EPOCHS):
    """Train a Base model (no augmentation, no OE) and return its detection and accuracy summaries."""
    arrays, noise = digits
    overrides = {"epochs": epochs, "device": "cpu"}
    if model_name is not None:
        overrides["model"] = model_name
    cfg = validate_config({"train": overrides})
    torch.set_num_threads(1)
    model, _ = train(arrays, "none", "baseline", 1, cfg, str(tmp_path / "model.pt"), str(tmp_path / "log.csv"), None)
    device = torch.device("cpu")
    id_logits, _ = forward_in_batches(model.eval(), arrays["x_test"], device)
    base = dict(augment="none", oe="baseline", seed=1, source=str(tmp_path / "model.pt"))
    rows = [dict(base, metric="accuracy", set="id_test", score="", value=accuracy(id_logits, arrays["y_test"]))]
    for name, images in noise.items():
        logits, _ = forward_in_batches(model, images, device)
        rows.append(dict(base, metric="auroc", set=name, score="msp",
                         value=auroc(msp_score(id_logits), msp_score(logits))))
    table = summarize(pd.DataFrame(rows, columns=COLUMNS))
    return cfg, table[table.metric == "auroc"], table[table.metric == "accuracy"]


def test_the_default_model_detects_pure_noise_like_published_baselines(digits, tmp_path):
    cfg, detection, acc = base_model_tables(None, digits, tmp_path)
    aurocs = dict(zip(detection["set"], detection["mean"]))
    assert aurocs["gaussian"] >= 0.99 and aurocs["bernoulli"] >= 0.99, (cfg["train"]["model"], aurocs)
    assert acc["mean"].item() > 0.9
    assert check_baseline(detection, acc) == []


def test_a_batch_norm_model_sets_off_the_broken_baseline_warning(digits, tmp_path):
    cfg, detection, acc = base_model_tables("small_convnet", digits, tmp_path, BN_EPOCHS)
    findings = check_baseline(detection, acc)
    assert findings and {f["rule"] for f in findings} == {"noise"}, dict(zip(detection["set"], detection["mean"]))
    # the report's summary opens with it (lib/report/summary.py)
    warning = baseline_warning(cfg, {"summary": acc}, {"summary": detection})
    assert warning["sentences"] == warning_sentences(findings, "small_convnet")
    assert warning["sentences"][0].startswith("Warning: the Base model is not a sound baseline")
    assert "batch normalisation" in warning["sentences"][1]
