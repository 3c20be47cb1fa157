"""PixMix: each operation against PIL / torchvision, the mixings, the batch contract,
and the batched version against the per-sample reference in distribution."""
import math
import sys

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance, ImageOps
from torchvision.transforms import InterpolationMode

from benchmarks.bench_pixmix import digit_images
from lib.train import pixmix as P
from lib.train import pixmix_ops as O
from lib.train import pixmix_shards as S
from lib.data.mixing import fractal_images
from lib.train.pixmix_reference import pixmix_reference_batch

BILINEAR = InterpolationMode.BILINEAR


@pytest.fixture(scope="module")
def pictures():
    """uint8 [N,28,28]: digits, plus a noise picture, a flat one and a narrow-range one."""
    rng = np.random.default_rng(0)
    digits = digit_images(40, seed=1)
    extra = np.stack([rng.integers(0, 256, (28, 28)), np.full((28, 28), 77),
                      rng.integers(50, 60, (28, 28))]).astype(np.uint8)
    return np.concatenate([digits, extra])


def as_tensor(u8):
    return torch.from_numpy(u8).float().div(255)[:, None]


def as_levels(x):
    return (x[:, 0] * 255).round().to(torch.int64).numpy()


def with_pil(u8, operation):
    return np.stack([np.asarray(operation(Image.fromarray(picture))) for picture in u8]).astype(np.int64)


# ---------------------------------------------------------------- point operations

@pytest.mark.parametrize("name, ours, theirs", [
    ("autocontrast", O.autocontrast, ImageOps.autocontrast),
    ("equalize", O.equalize, ImageOps.equalize),
    *[(f"posterize{bits}", lambda x, bits=bits: O.posterize(x, bits),
       lambda im, bits=bits: ImageOps.posterize(im, bits)) for bits in (1, 3, 4)],
    *[(f"solarize{t}", lambda x, t=t: O.solarize(x, t),
       lambda im, t=t: ImageOps.solarize(im, t)) for t in (180, 230, 254)],
    *[(f"{name}{f}", lambda x, op=getattr(O, name), f=f: op(x, f),
       lambda im, enhancer=getattr(ImageEnhance, name.title()), f=f: enhancer(im).enhance(f))
      for name in ("contrast", "brightness", "sharpness", "color") for f in (0.1, 0.73, 1.9)],
])
def test_point_operation_equals_pil_on_8_bit_pictures(pictures, name, ours, theirs):
    got = as_levels(ours(as_tensor(pictures)))
    assert np.array_equal(got, with_pil(pictures, theirs)), name


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(0, 8), seed=st.integers(0, 2**16))
def test_posterize_keeps_the_top_bits(bits, seed):
    levels = np.random.default_rng(seed).integers(0, 256, (3, 28, 28))
    got = as_levels(O.posterize(as_tensor(levels.astype(np.uint8)), bits))
    keep = (0xFF << (8 - bits)) & 0xFF
    assert np.array_equal(got, levels & keep)


@settings(max_examples=40, deadline=None)
@given(threshold=st.integers(0, 256), seed=st.integers(0, 2**16))
def test_solarize_inverts_exactly_the_levels_at_or_above_the_threshold(threshold, seed):
    levels = np.random.default_rng(seed).integers(0, 256, (3, 28, 28))
    got = as_levels(O.solarize(as_tensor(levels.astype(np.uint8)), threshold))
    assert np.array_equal(got, np.where(levels >= threshold, 255 - levels, levels))


def test_per_sample_magnitudes_act_on_their_own_sample(pictures):
    x = as_tensor(pictures[:3])
    bits = torch.tensor([1, 3, 4])
    together = O.posterize(x, bits)
    for i in range(3):
        assert torch.equal(together[i:i + 1], O.posterize(x[i:i + 1], int(bits[i])))


# ---------------------------------------------------------------- geometric operations

@pytest.mark.parametrize("degrees", [0.0, 3.0, -8.0, 25.0])
def test_rotate_agrees_with_torchvision(pictures, degrees):
    x = as_tensor(pictures)
    expected = TF.rotate(x, degrees, interpolation=BILINEAR)
    assert torch.allclose(O.rotate(x, degrees), expected, atol=1e-5)


@pytest.mark.parametrize("degrees", [0, 1, -4, 8, 30])
def test_whole_degree_rotation_taps_agree_with_rotate(pictures, degrees):
    # the augmentation path rotates by whole degrees through cached bilinear taps
    x = as_tensor(pictures)
    flat = x.reshape(len(x), 28 * 28)
    out = torch.empty_like(flat)
    O._rotate_padded_into(out, torch.nn.functional.pad(flat, (0, 1)), degrees, 28, 28)
    assert torch.allclose(out.view_as(x), O.rotate(x, float(degrees)), atol=1e-5)


@pytest.mark.parametrize("shear", [0.09, -0.05, 0.3])
def test_shears_agree_with_torchvision_about_the_top_left_corner(pictures, shear):
    # PIL's (1, s, 0, 0, 1, 0) shears about the origin, torchvision's shear angle is atan(s)
    x = as_tensor(pictures)
    angle = math.degrees(math.atan(shear))
    common = dict(angle=0.0, translate=[0.0, 0.0], scale=1.0, interpolation=BILINEAR, center=[0.0, 0.0])
    assert torch.allclose(O.shear_x(x, shear), TF.affine(x, shear=[angle, 0.0], **common), atol=1e-5)
    assert torch.allclose(O.shear_y(x, shear), TF.affine(x, shear=[0.0, angle], **common), atol=1e-5)


@pytest.mark.parametrize("pixels", [0, 2, -3, 9])
def test_translations_agree_with_torchvision(pictures, pixels):
    # PIL's (1, 0, t, 0, 1, 0) reads input x + t: the picture moves by -t
    x = as_tensor(pictures)
    common = dict(angle=0.0, scale=1.0, shear=[0.0, 0.0], interpolation=BILINEAR)
    assert torch.allclose(O.translate_x(x, pixels), TF.affine(x, translate=[-pixels, 0], **common), atol=1e-5)
    assert torch.allclose(O.translate_y(x, pixels), TF.affine(x, translate=[0, -pixels], **common), atol=1e-5)


@pytest.mark.parametrize("shift", [O.shear_x, O.shear_y, O.translate_x, O.translate_y])
def test_line_shifts_take_an_empty_batch(shift):
    assert shift(torch.empty(0, 1, 28, 28), 0.2).shape == (0, 1, 28, 28)


def test_translation_by_whole_pixels_equals_pil(pictures):
    for pixels in (2, -1):
        got = as_levels(O.translate_x(as_tensor(pictures), pixels))
        expected = with_pil(pictures, lambda im: im.transform((28, 28), Image.AFFINE, (1, 0, pixels, 0, 1, 0),
                                                               resample=Image.BILINEAR))
        assert np.array_equal(got, expected)


def test_geometric_magnitudes_are_per_sample(pictures):
    x = as_tensor(pictures[:4])
    shears = torch.tensor([0.05, -0.09, 0.0, 0.2])
    together = O.shear_y(x, shears)
    for i in range(4):
        assert torch.allclose(together[i:i + 1], O.shear_y(x[i:i + 1], float(shears[i])), atol=1e-6)


# ---------------------------------------------------------------- the level scheme and augment_batch

def test_magnitudes_follow_the_reference_level_scheme():
    level = torch.full((len(O.ALL_OPS),), 2.6)
    ops = torch.arange(len(O.ALL_OPS))
    plain = dict(zip(O.ALL_OPS, O.op_magnitudes(ops, level, torch.zeros_like(ops, dtype=torch.bool)).tolist()))
    negated = dict(zip(O.ALL_OPS, O.op_magnitudes(ops, level, torch.ones_like(ops, dtype=torch.bool)).tolist()))
    expected = {"autocontrast": 0, "equalize": 0, "posterize": 4 - int(2.6 * 4 / 10),
                "rotate": int(2.6 * 30 / 10), "solarize": 256 - int(2.6 * 256 / 10),
                "shear_x": 2.6 * 0.3 / 10, "shear_y": 2.6 * 0.3 / 10,
                "translate_x": int(2.6 * (28 / 3) / 10), "translate_y": int(2.6 * (28 / 3) / 10),
                "color": 2.6 * 1.8 / 10 + 0.1, "contrast": 2.6 * 1.8 / 10 + 0.1,
                "brightness": 2.6 * 1.8 / 10 + 0.1, "sharpness": 2.6 * 1.8 / 10 + 0.1}
    for name, value in expected.items():
        assert plain[name] == pytest.approx(value, abs=1e-5), name
        sign = -1 if name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y") else 1
        assert negated[name] == pytest.approx(sign * value, abs=1e-5), name


@pytest.mark.parametrize("all_ops", [False, True])
def test_augment_batch_routes_each_sample_through_its_own_op(pictures, all_ops):
    x = as_tensor(np.concatenate([pictures] * 8))
    out, op_ids, magnitude = O.augment_batch(x, torch.Generator().manual_seed(3), severity=3.0,
                                             all_ops=all_ops)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert int(op_ids.max()) < (len(O.ALL_OPS) if all_ops else len(O.OPS))
    assert torch.equal((out * 255).round() / 255, out) and out.min() >= 0 and out.max() <= 1
    # ops without a magnitude must equal the per-op functions sample by sample
    for name, expected in (("autocontrast", O.autocontrast(x)), ("equalize", O.equalize(x)), ("color", x)):
        chosen = op_ids == O.ALL_OPS.index(name)
        if name == "color" and not all_ops:
            assert not chosen.any()
            continue
        assert chosen.any() and torch.equal(out[chosen], expected[chosen]), name
    # ops with a magnitude: the per-op function at the drawn magnitude, on the 1/255 grid
    # (geometric ops interpolate; their rounding may land one level apart)
    for name in O.ALL_OPS if all_ops else O.OPS:
        chosen = (op_ids == O.ALL_OPS.index(name)).nonzero().squeeze(1)
        if name in ("autocontrast", "equalize", "color") or not len(chosen):
            continue
        function = getattr(O, name)
        expected = torch.cat([function(x[i:i + 1], float(magnitude[i])) for i in chosen.tolist()])
        expected = (expected * 255).round() / 255
        exact = name in ("posterize", "solarize", "translate_x", "translate_y", "contrast", "brightness",
                         "sharpness")
        tolerance = 1e-6 if exact else 1 / 255 + 1e-6
        assert (out[chosen] - expected).abs().max() <= tolerance, name


def test_augment_batch_op_shares_are_uniform():
    x = torch.rand(9000, 1, 28, 28)
    _, op_ids, _ = O.augment_batch(x, torch.Generator().manual_seed(0))
    shares = torch.bincount(op_ids, minlength=9).float() / 9000
    assert (shares - 1 / 9).abs().max() < 0.02


# ---------------------------------------------------------------- mixing

def test_mix_add_on_known_values():
    x1 = torch.tensor([0.75, 0.0, 1.0]).view(3, 1, 1, 1)
    x2 = torch.tensor([0.25, 1.0, 1.0]).view(3, 1, 1, 1)
    a, b = torch.tensor([0.5, 1.5, 1.0]), torch.tensor([0.25, -0.5, 0.0])
    # (a (2 x1 - 1) + b (2 x2 - 1) + 1) / 2
    expected = [(0.5 * 0.5 + 0.25 * -0.5 + 1) / 2, (1.5 * -1 + -0.5 * 1 + 1) / 2, (1 * 1 + 0 + 1) / 2]
    assert P.mix_add(x1, x2, a, b).flatten().tolist() == pytest.approx(expected, abs=1e-6)
    assert P.mix_add(x1, x2, 0.5, 0.25)[0].item() == pytest.approx(expected[0], abs=1e-6)


def test_mix_multiply_on_known_values():
    x1 = torch.tensor([0.5, 0.25, 0.5, 0.0]).view(4, 1, 1, 1)
    x2 = torch.tensor([0.25, 0.5, 0.0, 0.5]).view(4, 1, 1, 1)
    a, b = torch.tensor([2.0, 2.0, 1.0, 0.7]), torch.tensor([-1.0, 0.5, 0.5, 0.3])
    # (2 x1)^a * max(2 x2, 1e-37)^b / 2
    expected = [1 ** 2 * 0.5 ** -1 / 2, 0.5 ** 2 * 1 ** 0.5 / 2, 1 * (1e-37) ** 0.5 / 2, 0.0]
    got = P.mix_multiply(x1, x2, a, b).flatten().tolist()
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-30)


weights = st.one_of(st.tuples(st.floats(1e-3, 1.0), st.floats(0.0, 1.0)),
                    st.tuples(st.floats(1.0, 2.0), st.floats(-1.0, 0.0)))


@settings(max_examples=60, deadline=None)
@given(ab=weights, seed=st.integers(0, 2**16), zeros=st.floats(0, 1))
def test_mixings_are_finite_and_clip_into_the_unit_interval(ab, seed, zeros):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.rand(4, 1, 28, 28, generator=g) * (torch.rand(4, 1, 28, 28, generator=g) > zeros)
    x2 = torch.rand(4, 1, 28, 28, generator=g) * (torch.rand(4, 1, 28, 28, generator=g) > zeros)
    for mix in (P.mix_add, P.mix_multiply):
        out = mix(x1, x2, *ab)
        assert out.shape == x1.shape and out.dtype == x1.dtype and torch.isfinite(out).all()
        clipped = out.clamp(0, 1)
        assert clipped.min() >= 0 and clipped.max() <= 1
    # the in-place multiply that pixmix_batch uses clips by capping the exponent
    a, b = (torch.full((4, 1, 1, 1), value) for value in ab)
    clipped_in_place = P._multiply_into(x1.clone(), x2.clone(), a, b, clip=True)
    assert torch.allclose(clipped_in_place, P.mix_multiply(x1, x2, *ab).clamp(0, 1), rtol=1e-6, atol=1e-30)


def test_mixing_weights_follow_the_reference_distributions():
    from scipy.stats import ks_2samp
    # the uniforms pixmix_batch's plan draws: kind, then the two the weights are made of
    kind, u_a, u_b = torch.rand(3, 20000, generator=torch.Generator().manual_seed(0))
    a, b = P._weights_from_uniforms(kind, u_a, u_b, 3.0)
    rng = np.random.default_rng(0)
    first = rng.random(20000) < 0.5
    ref_a = np.where(first, rng.beta(3, 1, 20000), 1 + rng.beta(1, 3, 20000))
    ref_b = np.where(first, rng.beta(1, 3, 20000), -rng.beta(1, 3, 20000))
    assert ks_2samp(a.numpy(), ref_a).pvalue > 1e-3 and ks_2samp(b.numpy(), ref_b).pvalue > 1e-3
    assert a.min() > 0 and a.max() <= 2 and b.min() >= -1 and b.max() <= 1


# ---------------------------------------------------------------- pixmix_batch

@pytest.fixture(scope="module")
def mixing_set():
    return fractal_images(200, seed=0)


def test_pixmix_batch_contract(pictures, mixing_set):
    x = as_tensor(np.concatenate([pictures] * 4))
    x_before = x.clone()
    mixing = as_tensor(mixing_set)
    out = P.pixmix_batch(x, mixing, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, x_before)
    again = P.pixmix_batch(x, mixing, torch.Generator().manual_seed(0))
    other = P.pixmix_batch(x, mixing, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_pixmix_batch_is_the_same_on_any_number_of_threads(mixing_set):
    # the batch is cut into one shard per torch thread; every random choice is drawn
    # before, so the shards change no choice. Values may differ in the last bit: a vector
    # kernel and its scalar tail round differently, and shards move where tails fall.
    x = as_tensor(digit_images(3 * S.MIN_SHARD, seed=2))
    mixing = as_tensor(mixing_set)
    previous = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(P.pixmix_batch(x, mixing, torch.Generator().manual_seed(4), return_trace=True))
    finally:
        torch.set_num_threads(previous)
    for out, trace in outs[1:]:
        assert torch.allclose(out, outs[0][0], rtol=1e-6, atol=1e-9) and trace == outs[0][1]


def test_shards_run_with_a_short_switch_interval_and_the_callers_comes_back(mixing_set, monkeypatch):
    # while shards share the interpreter lock, a short switch interval bounds how long one
    # waits for it; the caller's own interval is restored afterwards, also after a failure
    x, mixing = as_tensor(digit_images(2 * S.MIN_SHARD, seed=2)), as_tensor(mixing_set)
    seen = []
    rows = P._pixmix_rows

    def recording_rows(*args):
        seen.append(sys.getswitchinterval())
        return rows(*args)

    monkeypatch.setattr(P, "_pixmix_rows", recording_rows)
    previous_threads, previous_interval = torch.get_num_threads(), sys.getswitchinterval()
    torch.set_num_threads(2)
    try:
        sys.setswitchinterval(0.003)
        P.pixmix_batch(x, mixing, torch.Generator().manual_seed(0))
        assert seen == pytest.approx([S.SWITCH_INTERVAL_S] * 2) and sys.getswitchinterval() == 0.003

        def failing_rows(*args):
            raise RuntimeError("shard failed")

        monkeypatch.setattr(P, "_pixmix_rows", failing_rows)
        with pytest.raises(RuntimeError, match="shard failed"):
            P.pixmix_batch(x, mixing, torch.Generator().manual_seed(0))
        assert sys.getswitchinterval() == 0.003
    finally:
        torch.set_num_threads(previous_threads)
        sys.setswitchinterval(previous_interval)


def test_mixing_logs_are_reused_only_for_the_same_unchanged_pictures(mixing_set):
    # multiplying rounds read the mixing pictures' logs from a cache; a changed or another
    # set must not be mixed with stale logs
    x = as_tensor(digit_images(256, seed=3))
    mixing = as_tensor(mixing_set)

    def mixed(pictures):
        return P.pixmix_batch(x, pictures, torch.Generator().manual_seed(5))

    brighter = mixing.clone().mul_(0.5).add_(0.5)
    expected = mixed(brighter)
    first = mixed(mixing)  # now the cached set
    assert P._mixing_log2(mixing) is P._mixing_log2(mixing)
    assert torch.equal(P._mixing_log2(mixing), P._clamped_log2_(mixing.clone()))
    mixing.mul_(0.5).add_(0.5)  # the cached tensor itself, changed in place
    assert torch.equal(mixed(mixing), expected) and not torch.equal(expected, first)
    assert torch.equal(P._mixing_log2(mixing), P._clamped_log2_(brighter.clone()))


def _pixmix_in_child(x, mixing):
    torch.set_num_threads(2)
    P.pixmix_batch(x, mixing, torch.Generator().manual_seed(0))


def test_pixmix_batch_works_in_a_forked_child_of_a_process_that_used_threads(mixing_set):
    # a forked child inherits the helper pool's object but not its threads
    import multiprocessing
    x, mixing = torch.rand(2 * S.MIN_SHARD, 1, 28, 28), as_tensor(mixing_set)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        P.pixmix_batch(x, mixing, torch.Generator().manual_seed(0))  # starts the helper threads
        child = multiprocessing.get_context("fork").Process(target=_pixmix_in_child, args=(x, mixing))
        child.start()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
        assert child.exitcode == 0
    finally:
        torch.set_num_threads(previous)


def test_pixmix_batch_rejects_mismatched_shapes(mixing_set):
    with pytest.raises(ValueError, match="same picture size"):
        P.pixmix_batch(torch.rand(2, 1, 28, 28), torch.rand(3, 1, 32, 32), torch.Generator())


def test_pixmix_with_no_rounds_gives_x_or_one_augmentation(pictures, mixing_set):
    x = as_tensor(np.concatenate([pictures] * 20))
    out, trace = P.pixmix_batch(x, as_tensor(mixing_set), torch.Generator().manual_seed(0), k=0,
                                return_trace=True)
    plain = (out == x).flatten(1).all(1)
    assert trace["n_plain"] <= int(plain.sum())  # an augmentation can leave a picture unchanged
    assert abs(trace["n_plain"] / len(x) - 0.5) < 0.08
    assert sum(trace["op_counts"].values()) == len(x) - trace["n_plain"]


@pytest.mark.parametrize("all_ops", [False, True])
def test_batched_and_reference_agree_in_distribution(mixing_set, all_ops):
    n = 10_000
    images = digit_images(n, seed=5)
    reference_trace = {}
    reference = pixmix_reference_batch(images, mixing_set, np.random.default_rng(0), all_ops=all_ops,
                                       trace=reference_trace)
    batched, batched_trace = P.pixmix_batch(as_tensor(images), as_tensor(mixing_set),
                                            torch.Generator().manual_seed(0), all_ops=all_ops,
                                            return_trace=True)
    # plain x: 1/2 * 1/(k+1) = 0.1 expected; two binomials of 10k differ by < 0.02 (~5 sigma)
    assert abs(reference_trace["n_plain"] / n - 0.1) < 0.015
    assert abs(batched_trace["n_plain"] / n - reference_trace["n_plain"] / n) < 0.02
    ref_counts, our_counts = reference_trace["op_counts"], batched_trace["op_counts"]
    assert ref_counts.keys() == our_counts.keys()
    ref_total, our_total = sum(ref_counts.values()), sum(our_counts.values())
    assert abs(our_total / ref_total - 1) < 0.05  # about 1.5 augmentations per sample in both
    for name in ref_counts:
        assert abs(our_counts[name] / our_total - ref_counts[name] / ref_total) < 0.015, name
    # rounds by mixing op and by partner kind: shares of about 20k rounds, 1/2 each
    for counts in ("mix_counts", "partner_counts"):
        ours, theirs = batched_trace[counts], reference_trace[counts]
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert abs(ours[name] / sum(ours.values()) - theirs[name] / sum(theirs.values())) < 0.02, name
        assert abs(sum(ours.values()) / n - 2) < 0.06  # k/2 = 2 rounds per sample on average
    # first and second moments of the pixels, per picture: the two means may differ by
    # 4 standard errors (the standard error of a difference of two means of 10k pictures
    # is about 0.0025 for the first moment)
    ours = batched.flatten(1).double().numpy()
    theirs = reference.reshape(len(reference), -1).astype(np.float64)
    for power in (1, 2):
        our_moment, their_moment = (ours ** power).mean(1), (theirs ** power).mean(1)
        standard_error = math.sqrt(our_moment.var() / n + their_moment.var() / n)
        assert abs(our_moment.mean() - their_moment.mean()) < 4 * standard_error, power
