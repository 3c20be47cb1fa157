"""The offline MNIST-C generator: contract of corrupt(), one property per corruption, the CLI."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage, stats
from sklearn.datasets import load_digits

from lib.data.corruptions import (CORRUPTIONS, corrupt, line_intensity, main, motion_blur_kernel,
                             plasma_fractal, save_npz_atomic, warp_about_centre)


@pytest.fixture(scope="module")
def digits():
    """24 of scikit-learn's digits in MNIST's frame: ink only in the central 20x20 box."""
    small = load_digits().images[:24] / 16.0
    up = np.clip(ndimage.zoom(small, (1, 20 / 8, 20 / 8), order=1), 0.0, 1.0)
    frame = np.zeros((len(small), 28, 28))
    frame[:, 4:24, 4:24] = up
    return np.round(frame * 255).astype(np.uint8)


def centre_of_mass(images):
    """(row, column) centre of mass per image."""
    ink = images.astype(np.float64)
    index = np.arange(28)
    total = ink.sum(axis=(1, 2))
    return (ink.sum(axis=2) @ index) / total, (ink.sum(axis=1) @ index) / total


def ink_mass(images):
    return images.astype(np.float64).sum(axis=(1, 2))


# ------------------------------------------------------------ contract, every corruption

def test_the_fifteen_in_mnist_c_order():
    assert CORRUPTIONS == ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear",
                           "scale", "rotate", "brightness", "translate", "stripe", "fog",
                           "spatter", "dotted_line", "zigzag", "canny_edges")


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_dtype_and_input_untouched(digits, name):
    before = digits.copy()
    out = corrupt(digits, name, seed=0)
    assert out.shape == digits.shape
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(digits, before)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_for_a_seed(digits, name):
    np.testing.assert_array_equal(corrupt(digits, name, seed=3), corrupt(digits, name, seed=3))


@pytest.mark.parametrize("name", ["shot_noise", "impulse_noise", "glass_blur", "motion_blur",
                                  "shear", "rotate", "translate", "fog", "spatter",
                                  "dotted_line", "zigzag"])
def test_random_corruptions_move_with_the_seed(digits, name):
    assert not np.array_equal(corrupt(digits, name, seed=0), corrupt(digits, name, seed=1))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_changes_every_image(digits, name):
    out = corrupt(digits, name, seed=0)
    assert (out != digits).any(axis=(1, 2)).all()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_range_is_used_sensibly(digits, name):
    # uint8 bounds the range; check the output is not saturated to one value either.
    out = corrupt(digits, name, seed=0)
    assert out.min() < out.max()


def test_unknown_name_lists_the_allowed_ones(digits):
    with pytest.raises(ValueError, match="allowed: shot_noise, impulse_noise"):
        corrupt(digits, "frost", seed=0)


@pytest.mark.parametrize("bad", [np.zeros((2, 28, 28), np.float32), np.zeros((2, 32, 32), np.uint8),
                                 np.zeros((28, 28), np.uint8)])
def test_rejects_images_that_are_not_uint8_n_28_28(bad):
    with pytest.raises(ValueError, match=r"uint8 images of shape \[N, 28, 28\]"):
        corrupt(bad, "stripe", seed=0)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_rejects_bad_seeds(digits, seed):
    with pytest.raises(ValueError, match="seed"):
        corrupt(digits, "fog", seed=seed)


def test_empty_batch_gives_empty_batch():
    out = corrupt(np.zeros((0, 28, 28), np.uint8), "fog", seed=0)
    assert out.shape == (0, 28, 28) and out.dtype == np.uint8


def vertical_bars(n):
    bar = np.zeros((n, 28, 28), np.uint8)
    bar[:, 4:24, 13:15] = 255
    return bar


def tilt(images):
    """Least-squares slope d(column)/d(row) of the ink about the centre."""
    ink = images.astype(float)
    rows, cols = np.mgrid[0:28, 0:28] - 13.5
    return (ink * rows * cols).sum((1, 2)) / (ink * rows**2).sum((1, 2))


def test_corruptions_draw_from_separate_streams():
    # shear and rotate both start by drawing one sign per image; from one shared
    # stream the two sign patterns would be equal (or exactly opposite).
    bars = vertical_bars(40)
    shear_signs = np.sign(tilt(corrupt(bars, "shear", seed=0)))
    rotate_signs = np.sign(tilt(corrupt(bars, "rotate", seed=0)))
    assert not np.array_equal(shear_signs, rotate_signs)
    assert not np.array_equal(shear_signs, -rotate_signs)


# ------------------------------------------------------------ one property each

def test_shot_noise_levels_and_mean():
    grey = np.full((200, 28, 28), 128, np.uint8)
    out = corrupt(grey, "shot_noise", seed=0)
    # Poisson(3x)/3 clipped to 1: only 0, 1/3, 2/3, 1 are possible.
    assert set(np.unique(out)) <= {0, 85, 170, 255}
    rate = 3 * 128 / 255
    counts = np.arange(60)
    expected = (np.minimum(counts / 3, 1.0) * stats.poisson.pmf(counts, rate)).sum() * 255
    assert abs(out.mean() - expected) < 2.0


def test_shot_noise_keeps_black_black(digits):
    out = corrupt(digits, "shot_noise", seed=0)
    assert (out[digits == 0] == 0).all()


def test_impulse_noise_flips_about_17_percent():
    grey = np.full((200, 28, 28), 128, np.uint8)
    out = corrupt(grey, "impulse_noise", seed=0)
    changed = out != 128
    assert abs(changed.mean() - 0.17) < 0.01
    assert set(np.unique(out[changed])) == {0, 255}
    assert abs((out[changed] == 255).mean() - 0.5) < 0.02


def test_glass_blur_keeps_ink_mass(digits):
    ratio = ink_mass(corrupt(digits, "glass_blur", seed=0)) / ink_mass(digits)
    # Swaps move ink without creating it; only the uint8 step in between loses a little.
    np.testing.assert_allclose(ratio, 1.0, atol=0.02)


def test_motion_blur_kernel_is_one_sided_gaussian():
    weights = motion_blur_kernel(radius=10, sigma=3.0)
    assert len(weights) == 21
    assert weights.sum() == pytest.approx(1.0)
    assert weights[1] / weights[0] == pytest.approx(np.exp(-1 / 18))
    assert (np.diff(weights) < 0).all()


def test_motion_blur_smears_ink_to_the_left_and_keeps_mass(digits):
    out = corrupt(digits, "motion_blur", seed=0)
    # Pixels average their right-hand neighbours along |angle| <= 45 deg, so ink spreads left.
    assert (centre_of_mass(out)[1] < centre_of_mass(digits)[1] - 0.5).all()
    np.testing.assert_allclose(ink_mass(out) / ink_mass(digits), 1.0, atol=0.02)


def test_shear_slides_top_and_bottom_apart(digits):
    def top_minus_bottom_column(images):
        top, bottom = images[:, :14].astype(float), images[:, 14:].astype(float)
        cols = np.arange(28)
        return (top.sum(1) @ cols) / top.sum((1, 2)) - (bottom.sum(1) @ cols) / bottom.sum((1, 2))
    out = corrupt(digits, "shear", seed=0)
    shift = top_minus_bottom_column(out) - top_minus_bottom_column(digits)
    assert (np.abs(shift) > 2.0).all()
    assert (shift > 0).any() and (shift < 0).any()  # both signs drawn


def test_scale_shrinks_to_0_7_about_the_centre(digits):
    out = corrupt(digits, "scale", seed=0)
    np.testing.assert_allclose(ink_mass(out) / ink_mass(digits), 0.7**2, atol=0.02)
    for before, after in zip(centre_of_mass(digits), centre_of_mass(out)):
        np.testing.assert_allclose(after - 13.5, 0.7 * (before - 13.5), atol=0.3)

    def box(image, axis):
        present = np.nonzero((image > 0).any(axis=axis))[0]
        return present.max() - present.min()
    for before, after in zip(digits, out):
        for axis in (0, 1):
            assert box(after, axis) < box(before, axis)


def test_rotate_keeps_ink_mass_and_turns_both_ways(digits):
    out = corrupt(digits, "rotate", seed=0)
    np.testing.assert_allclose(ink_mass(out) / ink_mass(digits), 1.0, atol=0.02)
    # A vertical stroke through the centre tilts by tan(0.4) one way or the other.
    slopes = tilt(corrupt(vertical_bars(40), "rotate", seed=0))
    np.testing.assert_allclose(np.abs(slopes), np.tan(0.4), atol=0.05)
    assert (slopes > 0).any() and (slopes < 0).any()


def test_warp_with_identity_is_identity(digits):
    x = digits.astype(float) / 255
    np.testing.assert_allclose(warp_about_centre(x, np.eye(2)), x, atol=1e-12)


def test_brightness_adds_half_of_full_scale(digits):
    out = corrupt(digits, "brightness", seed=0).astype(int)
    expected = np.minimum(digits.astype(int) + 127.5, 255)
    assert np.abs(out - expected).max() <= 0.5
    assert out.mean() > digits.mean() + 100


@settings(max_examples=25, deadline=None)
@given(arrays(np.uint8, (3, 28, 28)))
def test_stripe_inverts_exactly_columns_0_6_and_21_27(images):
    out = corrupt(images, "stripe", seed=0)
    np.testing.assert_array_equal(out[:, :, :7], 255 - images[:, :, :7])
    np.testing.assert_array_equal(out[:, :, 21:], 255 - images[:, :, 21:])
    np.testing.assert_array_equal(out[:, :, 7:21], images[:, :, 7:21])


def test_translate_moves_the_centre_of_mass_by_3_px(digits):
    out = corrupt(digits, "translate", seed=0)
    drow = centre_of_mass(out)[0] - centre_of_mass(digits)[0]
    dcol = centre_of_mass(out)[1] - centre_of_mass(digits)[1]
    np.testing.assert_allclose(np.abs(drow), 3.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(dcol), 3.0, atol=1e-9)
    np.testing.assert_array_equal(ink_mass(out), ink_mass(digits))
    assert len({(np.sign(r), np.sign(c)) for r, c in zip(drow, dcol)}) >= 3


def test_plasma_fractal_spans_zero_to_one():
    maps = plasma_fractal(np.random.default_rng(0), 3, mapsize=64)
    assert maps.shape == (3, 64, 64)
    np.testing.assert_allclose(maps.min(axis=(1, 2)), 0.0)
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0)
    with pytest.raises(ValueError, match="power of two"):
        plasma_fractal(np.random.default_rng(0), 1, mapsize=28)


def test_fog_is_haze_over_a_dimmed_digit(digits):
    out = corrupt(digits, "fog", seed=0).astype(float) / 255
    x = digits.astype(float) / 255
    peak = x.max(axis=(1, 2), keepdims=True)
    # out = (x + 3 * haze) * peak / (peak + 3) with haze in [0, 1].
    assert (out >= x * peak / (peak + 3) - 1 / 255).all()
    assert (out <= (x + 3) * peak / (peak + 3) + 1 / 255).all()
    background = digits == 0
    assert (out[background] > 0).mean() > 0.9
    assert out.mean() > x.mean()


def test_fog_scales_the_digit_by_peak_over_peak_plus_3(digits):
    # Same seed and batch size give the same haze, so lighting one background pixel
    # to the image's own peak shows the scale applied to the image: p / (p + 3).
    peak = digits.max(axis=(1, 2))
    lit = digits.copy()
    lit[:, 0, 0] = peak
    step = corrupt(lit, "fog", seed=0).astype(int) - corrupt(digits, "fog", seed=0).astype(int)
    p = peak / 255.0
    np.testing.assert_allclose(step[:, 0, 0], peak * p / (p + 3), atol=1.0)
    assert (step[:, 1:, 1:] == 0).all()


def test_spatter_pulls_pixels_towards_mud_grey(digits):
    out = corrupt(digits, "spatter", seed=0).astype(int)
    x = digits.astype(int)
    # Each pixel is a blend of itself and grey 63, never beyond either.
    assert (out >= np.minimum(x, 63) - 1).all() and (out <= np.maximum(x, 63) + 1).all()
    assert ((out != x) & (x == 0)).any()


def test_line_intensity_is_one_on_the_line_and_zero_far_off():
    line = line_intensity([0.0], [10.0], [27.0], [10.0])[0]
    np.testing.assert_allclose(line[10, :27], 1.0)
    assert (line[13:, :] == 0).all() and (line[:8, :] == 0).all()
    assert (line[:, 27] == 0).all()  # columns from floor(c0) to ceil(c1) - 1 only
    assert (line_intensity([5.0], [0.0], [5.0], [20.0]) == 0).all()  # vertical: nothing drawn


def test_dotted_line_adds_ink_only_in_every_other_pair_of_columns(digits):
    out = corrupt(digits, "dotted_line", seed=0)
    assert (out >= digits).all()
    changed_columns = set(np.nonzero((out != digits).any(axis=(0, 1)))[0])
    allowed = {c for c in range(27) if (c // 2) % 2 == 1}
    assert changed_columns and changed_columns <= allowed


def test_zigzag_adds_ink_between_columns_2_and_26(digits):
    out = corrupt(digits, "zigzag", seed=0)
    assert (out >= digits).all()
    changed_columns = np.nonzero((out != digits).any(axis=(0, 1)))[0]
    assert changed_columns.min() >= 2 and changed_columns.max() <= 26
    # A zigzag, not a line: within one image the added ink goes up and down.
    added = (out[0].astype(int) - digits[0]) > 0
    rows_per_col = [np.nonzero(added[:, c])[0].mean() for c in range(3, 24) if added[:, c].any()]
    assert np.ptp(rows_per_col) >= 2


def test_canny_edges_is_a_binary_edge_map(digits):
    out = corrupt(digits, "canny_edges", seed=0)
    assert set(np.unique(out)) == {0, 255}
    assert (corrupt(np.zeros((2, 28, 28), np.uint8), "canny_edges", seed=0) == 0).all()


# ------------------------------------------------------------ command line

def test_cli_writes_one_npz_per_corruption_atomically(tmp_path, digits):
    source = tmp_path / "digits.npz"
    labels = np.arange(len(digits), dtype=np.int64) % 10
    np.savez(source, x_train=digits, y_train=labels, x_test=digits, y_test=labels)
    out_dir = tmp_path / "corruptions"
    main(["--in", str(source), "--seed", "0", "--out-dir", str(out_dir),
          "--corruptions", "stripe,fog"])
    assert sorted(os.listdir(out_dir)) == ["fog.npz", "stripe.npz"]
    with np.load(out_dir / "fog.npz") as written:
        assert sorted(written.files) == ["x_test", "y_test"]
        assert written["x_test"].dtype == np.uint8 and written["y_test"].dtype == np.int64
        np.testing.assert_array_equal(written["x_test"], corrupt(digits, "fog", seed=0))
        np.testing.assert_array_equal(written["y_test"], labels)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out_dir / "fog.npz").st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_nothing_behind(tmp_path, digits, monkeypatch):
    def broken_savez(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_npz_atomic(str(tmp_path / "stripe.npz"), x_test=digits)
    assert os.listdir(tmp_path) == []


def test_cli_default_is_all_fifteen(tmp_path, digits):
    source = tmp_path / "digits.npz"
    np.savez(source, x_test=digits[:2], y_test=np.zeros(2, np.int64))
    main(["--in", str(source), "--out-dir", str(tmp_path / "c")])
    assert sorted(os.listdir(tmp_path / "c")) == sorted(f"{name}.npz" for name in CORRUPTIONS)


def test_cli_rejects_an_unknown_corruption(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--in", "x.npz", "--out-dir", str(tmp_path), "--corruptions", "stripe,frost"])
    assert "frost" in capsys.readouterr().err


def test_cli_names_a_missing_input_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        main(["--in", str(tmp_path / "nothere.npz"), "--out-dir", str(tmp_path)])


def test_cli_names_missing_arrays(tmp_path, digits):
    source = tmp_path / "train_only.npz"
    np.savez(source, x_train=digits, y_train=np.zeros(len(digits), np.int64))
    with pytest.raises(ValueError, match=r"train_only.npz: no array 'x_test', 'y_test'"):
        main(["--in", str(source), "--out-dir", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_cli_rejects_a_corrupt_npz(tmp_path):
    source = tmp_path / "broken.npz"
    source.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="broken.npz is damaged or truncated"):
        main(["--in", str(source), "--out-dir", str(tmp_path / "c")])
