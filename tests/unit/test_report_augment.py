"""The report's training-samples figure (lib/report/augment_samples.py)."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from lib.report import augment_samples as R
from lib.config import validate_config
from lib.data.mixing import save_mixing_set


def digits_data(n_per_class=3, classes=10):
    """Training images whose pixel value encodes (class, copy), so a pick can be traced."""
    y = np.tile(np.arange(classes), n_per_class)[::-1].copy()          # classes out of order
    x = np.zeros((len(y), 28, 28), np.uint8)
    for i, label in enumerate(y):
        x[i, 4:24, 4:24] = 20 * label + 1
        x[i, 0, 0] = i
    return {"x_train": x, "y_train": y.astype(np.int64)}


def png_size(b64):
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return image.size


def test_sample_digits_takes_the_first_image_of_each_class_in_class_order():
    data = digits_data()
    picked = R.sample_digits(data)
    assert [int(p[10, 10]) for p in picked] == [20 * c + 1 for c in range(10)]
    first_index = {c: int(np.flatnonzero(data["y_train"] == c)[0]) for c in range(10)}
    assert [int(p[0, 0]) for p in picked] == [first_index[c] for c in range(10)]
    assert len(R.sample_digits(data, count=4)) == 4


def test_sample_digits_without_labels_takes_the_first_images():
    data = digits_data()
    data["y_train"][:] = -1
    assert np.array_equal(R.sample_digits(data, count=5), data["x_train"][:5])


@pytest.fixture(scope="module")
def cfg():
    return validate_config({"augment": ["none", "saltpepper", "pixmix"]})


def test_rows_are_seeded_none_is_the_input_and_others_change_it(cfg):
    digits = R.sample_digits(digits_data())
    mixing = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    rows = R.augmented_rows(digits, cfg["augment"], cfg, mixing)
    assert list(rows) == ["none", "saltpepper", "pixmix"]
    assert np.array_equal(rows["none"], digits)
    for name in ("saltpepper", "pixmix"):
        assert rows[name].shape == digits.shape and rows[name].dtype == np.uint8
        assert not np.array_equal(rows[name], digits)
    again = R.augmented_rows(digits, cfg["augment"], cfg, mixing)
    assert all(np.array_equal(rows[k], again[k]) for k in rows)
    # A row does not depend on the other rows listed before it.
    alone = R.augmented_rows(digits, ["pixmix"], cfg, mixing)
    assert np.array_equal(alone["pixmix"], rows["pixmix"])
    other_seed = R.augmented_rows(digits, ["saltpepper"], {**cfg, "seed": cfg["seed"] + 1}, mixing)
    assert not np.array_equal(other_seed["saltpepper"], rows["saltpepper"])


def test_figure_has_a_row_per_augment_and_one_for_the_mixing_set():
    images = np.zeros((10, 28, 28), np.uint8)
    two = png_size(R.samples_figure({"none": images, "saltpepper": images}))
    three = png_size(R.samples_figure({"none": images, "saltpepper": images}, mixing_pictures=images))
    assert abs(three[0] - two[0]) <= 10 and three[1] > two[1] * 1.3  # same columns, one more row


def write_run(tmp_path, with_mixing):
    data = digits_data()
    np.savez(tmp_path / "results" / "data" / "digits.npz", **data, x_test=data["x_train"], y_test=data["y_train"])
    if with_mixing:
        pictures = np.random.default_rng(1).integers(0, 256, (50, 28, 28), dtype=np.uint8)
        save_mixing_set(tmp_path / "results" / "data" / "mixing.npz", pictures, "fractals")


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "results" / "data").mkdir(parents=True)
    (tmp_path / "results" / "tables").mkdir()
    return tmp_path


def test_section_reads_the_mixing_set_beside_the_tables(run_dir, cfg):
    write_run(run_dir, with_mixing=True)
    section = R.augment_samples_section(cfg, str(run_dir / "results/data/digits.npz"), str(run_dir / "results/tables"))
    assert section["augments"] == ["none", "saltpepper", "pixmix"] and section["n_digits"] == 10
    assert section["mixing"] == {"source": "fractals", "count": 50}
    png_size(section["png"])


def test_section_without_pixmix_needs_no_mixing_set(run_dir):
    write_run(run_dir, with_mixing=False)
    cfg = validate_config({"augment": ["none", "saltpepper"]})
    section = R.augment_samples_section(cfg, str(run_dir / "results/data/digits.npz"), str(run_dir / "results/tables"))
    assert section["augments"] == ["none", "saltpepper"] and section["mixing"] is None
    assert R.augment_samples_section(cfg, None, str(run_dir / "results/tables")) is None


def test_missing_mixing_set_names_the_file_and_the_fix(run_dir, cfg):
    write_run(run_dir, with_mixing=False)
    with pytest.raises(FileNotFoundError) as error:
        R.augment_samples_section(cfg, str(run_dir / "results/data/digits.npz"), str(run_dir / "results/tables"))
    assert str(run_dir / "results" / "data" / "mixing.npz") in str(error.value)
    assert "snakemake results/data/mixing.npz" in str(error.value)
