"""The PixMix benchmark runs end to end at a tiny size (no timing assertions)."""
import math

import numpy as np

from benchmarks import bench_pixmix as bench_module
from benchmarks.bench_pixmix import EPOCH_IMAGES, bench_pixmix, digit_images, epoch_seconds, format_table, main


def test_digit_images_are_mnist_like():
    images = digit_images(50, seed=0)
    assert images.shape == (50, 28, 28) and images.dtype == np.uint8
    assert images[:, :4].max() == 0 and images[:, :, -4:].max() == 0  # black frame
    assert images.max() == 255 and np.array_equal(images, digit_images(50, seed=0))


def test_bench_pixmix_reports_speeds_and_their_ratio():
    import torch
    threads_before = torch.get_num_threads()
    result = bench_pixmix(n_images=64, batch_size=32, n_reference=16, repeats=3, n_mixing=8, threads=2)
    assert torch.get_num_threads() == threads_before
    for key in ("reference_images_per_s", "batched_images_per_s", "ratio", "batched_one_thread_images_per_s",
                "ratio_one_thread", "ratio_median", "ratio_one_thread_median"):
        assert math.isfinite(result[key]) and result[key] > 0
    assert result["ratio"] == result["batched_images_per_s"] / result["reference_images_per_s"]
    assert result["ratio_one_thread"] == result["batched_one_thread_images_per_s"] / result["reference_images_per_s"]
    assert result["n_images"] == 64 and result["batch_size"] == 32 and result["threads"] == 2
    # the headline speeds are the best repeats; the median ratio comes from the middle ones
    rates = result["repeat_images_per_s"]
    assert all(len(rates[name]) == 3 for name in ("reference", "batched", "one_thread"))
    assert result["reference_images_per_s"] == max(rates["reference"])
    assert result["batched_images_per_s"] == max(rates["batched"])
    assert result["batched_one_thread_images_per_s"] == max(rates["one_thread"])
    middle = {name: sorted(values)[1] for name, values in rates.items()}
    assert result["ratio_median"] == middle["batched"] / middle["reference"]
    assert result["ratio_one_thread_median"] == middle["one_thread"] / middle["reference"]
    line = format_table(result)
    assert "\n" not in line and "ratio" in line and "img/s" in line
    assert f"median of the repeats {result['ratio_median']:.1f}x" in line


def test_command_line_prints_one_line(capsys):
    main(["--n-images", "32", "--batch-size", "16", "--n-reference", "8", "--repeats", "1", "--n-mixing", "8"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("pixmix |")


def test_epoch_timing_augments_sixty_thousand_images_in_batches(monkeypatch):
    """The GPU line's timing, run on the CPU: every image of the epoch passes through
    pixmix_batch once, in batches of the asked size, after one warm-up batch."""
    import torch
    batches = []

    def count(x, mixing, generator):
        batches.append((x.shape[0], x.device.type, mixing.shape, generator.device.type))
        return x

    monkeypatch.setattr(bench_module, "pixmix_batch", count)
    seconds = epoch_seconds(digit_images(7, seed=0), np.zeros((3, 28, 28), np.uint8), 8192, 0, "cpu")
    assert math.isfinite(seconds) and seconds >= 0
    assert batches[0][0] == 8192  # the warm-up
    timed = [size for size, *_ in batches[1:]]
    assert sum(timed) == EPOCH_IMAGES == 60_000 and max(timed) == 8192 and len(timed) == 8
    assert all(batch[1:] == ("cpu", torch.Size([3, 1, 28, 28]), "cpu") for batch in batches)
