"""The training loop's pieces: chunks laid out as contiguous step batches, one step, one epoch,
and the job's own glibc setting that keeps freed memory."""
import os
import subprocess
import sys

import pytest
import torch

from lib.config import validate_config
from lib.train.models import build_model, to_fast_layout
from lib.train.loop import NonFiniteLoss, _NoAutocast, chunk_steps, make_optimizer, make_schedule, run_epoch, train_step, training_chunks
from tests.helpers import ROOT
from tests.helpers.faults import nan_loss_at_step


def tensors(n=96, n_aux=40):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    aux = torch.rand(n_aux, 1, 28, 28, generator=g) + 2  # values > 1 tell auxiliary rows apart
    return x, y, aux


def test_chunk_steps_cover_thousands_of_images_per_call():
    assert chunk_steps(128, "cpu") == 64 and chunk_steps(64, "cuda") == 256 and chunk_steps(10**6, "cpu") == 1


@pytest.mark.parametrize("per_chunk", [1, 2, 5])
def test_chunks_hold_each_steps_batch_then_its_auxiliary_pictures(per_chunk):
    x, y, aux = tensors()
    cfg = validate_config({})
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    batch, steps, aux_batch = 16, 5, 8
    seen = []
    for inputs, labels in training_chunks(x, y, order, batch, steps, "none", cfg, torch.Generator().manual_seed(2),
                                          aux=aux, aux_batch=aux_batch, steps_per_chunk=per_chunk):
        assert inputs.shape[1:] == (batch + aux_batch, 1, 28, 28) and labels.shape[1:] == (batch,)
        for step_inputs, step_labels in zip(inputs, labels):
            assert step_inputs.is_contiguous()
            seen.append((step_inputs[:batch], step_labels))
            assert (step_inputs[batch:] >= 2).all()  # auxiliary rows follow the labelled ones
            assert all(any(torch.equal(row, a) for a in aux) for row in step_inputs[batch:])
    assert len(seen) == steps
    for t, (images, labels) in enumerate(seen):
        idx = order[t * batch:(t + 1) * batch]
        assert torch.equal(images, x[idx]) and torch.equal(labels, y[idx])


def test_chunks_without_auxiliary_pictures_are_views_of_the_augmented_batches():
    x, y, _ = tensors()
    cfg = validate_config({})
    order = torch.arange(len(x))
    chunks = list(training_chunks(x, y, order, 32, 3, "saltpepper", cfg, torch.Generator().manual_seed(0),
                                  steps_per_chunk=2))
    assert [len(inputs) for inputs, _ in chunks] == [2, 1]
    noisy = torch.cat([inputs.flatten(0, 1) for inputs, _ in chunks])
    assert noisy.shape == (96, 1, 28, 28) and not torch.equal(noisy, x)
    assert ((noisy == 0) | (noisy == 1) | (noisy == x)).all()  # salt, pepper or the original pixel


def _model_and_optimiser():
    torch.manual_seed(0)
    cfg = validate_config({"train": {"model": "small_convnet"}})
    model = to_fast_layout(build_model("small_convnet", 10))
    optimizer = make_optimizer(model.parameters(), cfg["train"], 0.05)
    return cfg, model, optimizer, make_schedule(optimizer, "constant", 1)


def test_train_step_returns_device_tensors_and_moves_the_weights():
    cfg, model, optimizer, schedule = _model_and_optimiser()
    x, y, aux = tensors()
    before = [p.detach().clone() for p in model.parameters()]
    loss, right = train_step(model, optimizer, schedule, torch.cat([x[:16], aux[:32]]), y[:16], 0.5, _NoAutocast())
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and torch.isfinite(loss)
    assert right.dtype == torch.long and 0 <= int(right) <= 16
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_run_epoch_reports_loss_and_accuracy_and_names_the_first_bad_batch():
    cfg, model, optimizer, schedule = _model_and_optimiser()
    x, y, aux = tensors()
    args = (model, optimizer, schedule, x, y, 16, 6, "none", cfg, torch.Generator().manual_seed(0), _NoAutocast())
    loss, accuracy = run_epoch(*args, aux=aux, aux_batch=32, lam=0.5, steps_per_chunk=4)
    assert loss > 0 and 0 <= accuracy <= 1
    with nan_loss_at_step(4), pytest.raises(NonFiniteLoss, match="loss is nan at batch 5"):  # in the second chunk
        run_epoch(*args, steps_per_chunk=4)
    cfg, model, optimizer, schedule = _model_and_optimiser()  # the poisoned weights are NaN now
    with nan_loss_at_step(1), pytest.raises(NonFiniteLoss, match="epoch 3, batch 2"):
        run_epoch(model, optimizer, schedule, *args[3:], steps_per_chunk=6,
                  describe=lambda number, value: f"loss is {value} at epoch 3, batch {number}")


KEEP_MEMORY_PROBE = """
import resource, torch
from lib.common import keep_freed_memory
kept = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
per_cycle = []
for _ in range(12):
    before = faults()
    torch.empty(40_000, 784).fill_(1)   # 125 MB, allocated, touched and freed
    per_cycle.append(faults() - before)
# the heap grows for the first few cycles (torch's aligned allocations do not fit the
# chunk just freed until neighbours merge); after that the same memory comes back
print(kept, max(per_cycle[-4:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("preset", [False, True])
def test_keep_freed_memory_stops_page_faults_unless_the_environment_decides(preset):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if preset:
        env["MALLOC_TOP_PAD_"] = "0"  # the user's own setting wins; the probe then faults as by default
    done = subprocess.run([sys.executable, "-c", KEEP_MEMORY_PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    kept, faults_per_cycle = done.stdout.split()  # page faults of the worst of the last cycles
    if preset:
        assert kept == "False" and int(faults_per_cycle) > 10_000  # 125 MB = 30,000 pages back from the OS
    else:
        assert kept == "True" and int(faults_per_cycle) < 100


@pytest.mark.parametrize("compile_flag", [False, True])
def test_train_compile_flag_wraps_the_model_for_training_only(tmp_path, monkeypatch, compile_flag):
    from lib.data.registry import make_dataset
    from lib.train.loop import train
    wrapped = []

    def fake_compile(model):
        # stands in for torch.compile (seconds of compiling): records the call, runs the model as is
        wrapped.append(model)
        return model
    monkeypatch.setattr(torch, "compile", fake_compile)
    data = {k: v[:200] if k.endswith("train") else v for k, v in make_dataset("digits").items()}
    cfg = validate_config({"train": {"model": "small_convnet", "epochs": 1, "batch_size": 32, "compile": compile_flag}})
    model, rows = train(data, "none", "baseline", 1, cfg, str(tmp_path / "m.pt"), str(tmp_path / "log.csv"), None)
    assert len(rows) == 1 and (tmp_path / "m.pt").exists()
    assert wrapped == ([model] if compile_flag else [])
