"""Datasets: built-in shapes and ranges; user .npy arrays and image folders; clear errors."""
import numpy as np
import pytest
import torch

from ringflow.data import DATASETS, LEVELS, load_dataset, read_png


def test_digits():
    x, y = load_dataset("digits")
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,) and y.dtype == torch.long
    assert x.min() == -1 and x.max() == 1 and set(y.tolist()) == set(range(10))
    grid = (x + 1) / 2 * (LEVELS["digits"] - 1)
    assert torch.allclose(grid, grid.round(), atol=1e-5)                 # 17 grey levels


def test_mnist_is_shuffled():
    x, y = load_dataset("mnist", seed=0)
    assert x.shape == (5000, 1, 28, 28) and x.min() == -1 and x.max() == 1
    assert (y[:500].bincount(minlength=10) > 20).all()                  # stored sorted by class
    assert not torch.equal(y, load_dataset("mnist", seed=1)[1])


@pytest.mark.parametrize("name", ["moons", "8gaussians", "swissroll", "checkerboard"])
def test_toy_sets(name):
    x, y = load_dataset(name, n=500, seed=3)
    assert x.shape == (500, 2) and x.dtype == torch.float32 and x.abs().max() < 4
    assert torch.equal(x, load_dataset(name, n=500, seed=3)[0])
    assert not torch.equal(x, load_dataset(name, n=500, seed=4)[0])
    assert y is None or y.shape == (500,)
    assert name in DATASETS


def test_npy_arrays(tmp_path):
    path = tmp_path / "imgs.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (5, 6, 6, 3), dtype=np.uint8))
    x, y = load_dataset(str(path))
    assert x.shape == (5, 3, 6, 6) and y is None and -1 <= x.min() and x.max() <= 1
    np.save(path, np.random.default_rng(0).random((7, 2)))
    assert load_dataset(str(path))[0].shape == (7, 2)


def test_image_folder_with_classes(tmp_path):
    from PIL import Image                                               # test-only writer
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(
                tmp_path / label / f"{i}.png")
    x, y = load_dataset(str(tmp_path))
    assert x.shape == (6, 1, 4, 4) and y.tolist() == [0, 0, 0, 1, 1, 1]
    img = read_png(str(tmp_path / "dog" / "0.png"))
    assert np.array_equal(img, np.array(Image.open(tmp_path / "dog" / "0.png")))


def test_bad_paths_and_shapes_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a built-in name"):
        load_dataset("no/such/folder")
    with pytest.raises(ValueError, match="no .png or .npy"):
        load_dataset(str(tmp_path))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 5, 6, 7)))
    with pytest.raises(ValueError, match="expected square images"):
        load_dataset(str(bad))
    np.save(bad, np.zeros((0, 8, 8)))
    with pytest.raises(ValueError, match="empty"):
        load_dataset(str(bad))
    np.save(bad, np.full((3, 8, 8), 7.5))
    with pytest.raises(ValueError, match="value_range"):
        load_dataset(str(bad))
    np.save(bad, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        load_dataset(str(bad))
