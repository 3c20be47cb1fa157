"""The PixMix mixing set: IFS fractals, staged image folders, the npz on disk."""
import os

import numpy as np
import pytest
from PIL import Image

from lib.data import mixing as M


@pytest.fixture(scope="module")
def fractals():
    return M.fractal_images(120, seed=7)


def test_fractals_are_28x28_uint8_and_deterministic_for_a_seed(fractals):
    assert fractals.shape == (120, 28, 28) and fractals.dtype == np.uint8
    assert np.array_equal(fractals[:30], M.fractal_images(30, seed=7))
    assert not np.array_equal(fractals[:30], M.fractal_images(30, seed=8))


def test_fractals_are_non_trivial(fractals):
    lit = M.lit_fraction(fractals)
    assert lit.min() >= M.MIN_LIT_FRACTION and lit.max() <= M.MAX_LIT_FRACTION
    assert 0.08 < lit.mean() < 0.5
    assert (fractals.max(axis=(1, 2)) == 255).all()  # each picture spans the full grey range
    # a shape, not a dot: the lit pixels spread over several rows and columns
    rows_lit = (fractals > M.LIT_LEVEL).any(axis=2).sum(axis=1)
    columns_lit = (fractals > M.LIT_LEVEL).any(axis=1).sum(axis=1)
    assert np.minimum(rows_lit, columns_lit).min() >= 4


def test_fractals_are_distinct_from_each_other(fractals):
    flat = fractals.reshape(len(fractals), -1).astype(np.float64)
    assert len(np.unique(flat, axis=0)) == len(fractals)
    centred = flat - flat.mean(1, keepdims=True)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    correlation = unit @ unit.T
    np.fill_diagonal(correlation, 0)
    assert correlation.max() < 0.95


def test_fractal_arguments_are_checked():
    with pytest.raises(ValueError, match="render_px"):
        M.fractal_images(3, seed=0, render_px=32)
    assert M.fractal_images(0, seed=0).shape == (0, 28, 28)


def test_render_at_a_larger_size_still_gives_28x28():
    pictures = M.fractal_images(5, seed=1, render_px=112)
    assert pictures.shape == (5, 28, 28) and (M.lit_fraction(pictures) >= M.MIN_LIT_FRACTION).all()


def test_area_resize_matrix_preserves_mass():
    resize = M._area_resize_matrix(64, 28)
    assert resize.shape == (28, 64)
    assert np.allclose(resize.sum(axis=1), 1.0)  # a flat picture stays flat
    assert np.allclose(resize.sum(axis=0), 28 / 64)


# ---------------------------------------------------------------- staged folders

def write_pictures(folder):
    """A nested folder of mixed formats, sizes and modes, plus a non-image file."""
    rng = np.random.default_rng(0)
    (folder / "a" / "b").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "one.png")
    Image.fromarray(np.full((100, 50), 77, dtype=np.uint8)).save(folder / "a" / "flat.PNG")
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(folder / "a" / "b" / "two.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "a" / "b" / "three.jpg")
    (folder / "notes.txt").write_text("not a picture")


def test_folder_images_reads_nested_folders_as_grey_28x28(tmp_path):
    write_pictures(tmp_path)
    pictures = M.folder_images(tmp_path, count=4, seed=0)
    assert pictures.shape == (4, 28, 28) and pictures.dtype == np.uint8
    # the flat 77 picture is in there, whatever crop was taken
    assert any((p == 77).all() for p in pictures)
    assert np.array_equal(pictures, M.folder_images(tmp_path, count=4, seed=0))


def test_folder_images_repeat_files_with_other_crops_when_count_is_larger(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (90, 90), dtype=np.uint8)).save(tmp_path / "only.png")
    pictures = M.folder_images(tmp_path, count=6, seed=0)
    assert pictures.shape == (6, 28, 28)
    assert len(np.unique(pictures.reshape(6, -1), axis=0)) > 1


def test_folder_crop_comes_from_the_picture_resized_to_32(tmp_path):
    # a picture whose left half is black and right half white: any 28-wide crop of the
    # 32x32 resize keeps both halves, so each crop has dark and bright columns
    half = np.zeros((64, 64), dtype=np.uint8)
    half[:, 32:] = 255
    Image.fromarray(half).save(tmp_path / "half.png")
    for seed in range(5):
        crop = M.folder_images(tmp_path, count=1, seed=seed)[0]
        assert crop[:, 0].max() == 0 and crop[:, -1].min() == 255


@pytest.mark.parametrize("make", ["missing", "empty", "no_images"])
def test_folder_without_pictures_names_the_folder_and_the_fix(tmp_path, make):
    folder = tmp_path / "staged"
    if make != "missing":
        folder.mkdir()
    if make == "no_images":
        (folder / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError) as error:
        M.folder_images(folder, count=3, seed=0)
    assert str(folder) in str(error.value) and "fractals" in str(error.value)


def test_unreadable_picture_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(OSError, match="broken.png"):
        M.folder_images(tmp_path, count=1, seed=0)


# ---------------------------------------------------------------- the npz and the command line

def test_command_line_writes_fractals_atomically(tmp_path):
    out = tmp_path / "results" / "data" / "mixing.npz"
    M.main(["--source", "fractals", "--count", "12", "--seed", "3", "--out", str(out)])
    images, source = M.load_mixing_set(out)
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8 and source == "fractals"
    assert np.array_equal(images, M.fractal_images(12, seed=3))
    assert os.listdir(out.parent) == ["mixing.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask


def test_command_line_reads_a_folder(tmp_path):
    write_pictures(tmp_path / "pics")
    out = tmp_path / "mixing.npz"
    M.main(["--source", "folder", "--folder", str(tmp_path / "pics"), "--count", "5", "--out", str(out)])
    images, source = M.load_mixing_set(out)
    assert images.shape == (5, 28, 28) and source.startswith("folder:")


def test_command_line_folder_source_needs_a_folder(tmp_path):
    with pytest.raises(SystemExit):
        M.main(["--source", "folder", "--out", str(tmp_path / "m.npz")])


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_savez(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(M.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        M.save_mixing_set(tmp_path / "mixing.npz", np.zeros((2, 28, 28), np.uint8), "fractals")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- the folder's fingerprint and CLI errors

def test_folder_fingerprint_changes_with_the_pictures_and_only_with_them(tmp_path):
    write_pictures(tmp_path)
    first = M.folder_fingerprint(tmp_path)
    assert M.folder_fingerprint(tmp_path) == first
    (tmp_path / "notes.txt").write_text("other text")        # not a picture: ignored
    assert M.folder_fingerprint(tmp_path) == first
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "a" / "new.png")
    added = M.folder_fingerprint(tmp_path)
    assert added != first
    Image.fromarray(np.ones((31, 30), np.uint8)).save(tmp_path / "a" / "new.png")  # rewritten
    assert M.folder_fingerprint(tmp_path) not in (first, added)
    (tmp_path / "a" / "new.png").unlink()
    os.utime(tmp_path / "one.png", ns=(0, 0))                 # touched
    assert M.folder_fingerprint(tmp_path) != first


def test_folder_fingerprint_of_an_empty_or_missing_folder_is_the_empty_listing(tmp_path):
    assert M.folder_fingerprint(tmp_path) == M.folder_fingerprint(tmp_path / "missing")
    assert M.image_files_under(tmp_path / "missing") == []


def test_command_line_names_an_empty_folder_without_a_traceback(tmp_path, capsys):
    out = tmp_path / "results" / "mixing.npz"
    assert M.main(["--source", "folder", "--folder", str(tmp_path), "--count", "3", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "holds no image files" in err and "source: fractals" in err
    assert "Traceback" not in err and not out.parent.exists()
