"""Offline data sets: the bundled digits and the generated OOD sets."""
import numpy as np
import pytest

from lib.data.registry import DATASETS, make_dataset
from lib.data.synthetic import digits_28


def test_digits_shape_dtype_range_labels_split():
    d = make_dataset("digits")
    assert d["x_train"].shape == (1437, 28, 28) and d["x_test"].shape == (360, 28, 28)
    for x in (d["x_train"], d["x_test"]):
        assert x.dtype == np.uint8 and x.max() == 255 and x.min() == 0
    assert set(np.unique(d["y_train"])) == set(range(10)) == set(np.unique(d["y_test"]))
    assert d["y_train"].dtype == np.int64
    # stratified: every class holds 20% (+-1 image) of its images in the test split
    for c in range(10):
        n_test, n_train = (d["y_test"] == c).sum(), (d["y_train"] == c).sum()
        assert abs(n_test - 0.2 * (n_test + n_train)) <= 1


def test_digits_sit_in_the_central_20x20_box_white_on_black():
    x = make_dataset("digits")["x_train"]
    border = np.ones((28, 28), bool)
    border[4:24, 4:24] = False
    assert x[:, border].max() == 0
    assert x.mean() < 60  # mostly black background, like MNIST (mean ~33)


def test_digits_split_does_not_depend_on_the_study_seed():
    a, b = make_dataset("digits", seed=0), make_dataset("digits", seed=7)
    assert np.array_equal(a["x_test"], b["x_test"])


def test_digits_28_scales_full_ink_to_255():
    x = digits_28(np.full((1, 8, 8), 16))
    assert x[0, 4:24, 4:24].min() == 255 and x[0, :4].max() == 0


@pytest.mark.parametrize("name", ["gaussian", "bernoulli", "blobs", "uniform", "photos"])
def test_synthetic_sets_are_deterministic_and_in_range(name):
    a = make_dataset(name, seed=3, size=50)
    b = make_dataset(name, seed=3, size=50)
    c = make_dataset(name, seed=4, size=50)
    assert a["x_test"].shape == (50, 28, 28) and a["x_test"].dtype == np.uint8
    assert np.array_equal(a["x_test"], b["x_test"])
    assert not np.array_equal(a["x_test"], c["x_test"])
    assert (a["y_test"] == -1).all()


def test_generators_follow_outlier_exposure_parameters():
    g = make_dataset("gaussian", size=400)["x_test"] / 255.0
    assert abs(np.median(g) - 0.5) < 0.05 and (g == 0).mean() > 0.1 and (g == 1).mean() > 0.1  # clip(N(.5,.5))
    b = make_dataset("bernoulli", size=400)["x_test"]
    assert set(np.unique(b)) == {0, 255} and abs((b == 255).mean() - 0.5) < 0.01
    blobs = make_dataset("blobs", size=200)["x_test"] / 255.0
    lit = blobs[blobs > 0]
    assert lit.min() >= 0.75 - 1 / 255 and 0.05 < (blobs > 0).mean() < 0.95


def test_negated_and_jigsaw_come_from_the_in_distribution_set():
    d = make_dataset("digits")
    neg = make_dataset("negated", id_arrays=d)["x_test"]
    assert np.array_equal(neg, 255 - d["x_test"])
    jig = make_dataset("jigsaw", seed=0, size=20, id_arrays=d)["x_train"]
    assert jig.shape == (20, 28, 28)
    # same ink, reshuffled: every jigsaw image's pixel multiset equals some training image's
    sums = set(d["x_train"].reshape(len(d["x_train"]), -1).astype(int).sum(1))
    assert all(int(s) in sums for s in jig.reshape(20, -1).astype(int).sum(1))
    with pytest.raises(ValueError, match="in-distribution"):
        make_dataset("negated")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: .*digits"):
        make_dataset("mnistt")
    assert all({"make", "role", "source", "licence"} <= set(spec) for spec in DATASETS.values())
