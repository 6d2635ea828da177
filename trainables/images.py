"""One image file as pixels: read upright, RGB and square as uint8; whether a file decodes at all (what PIL
raises on one that does not); and ``ImageFiles``, a pool of files decoded on demand (a streamed set).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def read_image(path: str, size: int) -> np.ndarray:
    """One image file as uint8 (3, size, size): upright (EXIF), RGB, resized square (aspect ratio not kept,
    as in paper 002; smaller images are resized up)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = _as_rgb(ImageOps.exif_transpose(im))
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def _as_rgb(im: Any) -> Any:
    """Any PIL mode as RGB. 16/32-bit greyscale is scaled to 0..255 (PIL's own convert would clip it)."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)
        im = Image.fromarray(np.clip(np.rint(a * 255.0 / top), 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # palette transparency goes through RGBA, as PIL recommends
    return im.convert("RGB")


# What PIL raises on a damaged or unsupported file (SyntaxError: some broken headers).
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError)


def readable(path: str) -> bool:
    """Whether ``path`` decodes as an image. ``verify`` checks structure (a PNG's checksums) but reads only a
    JPEG's headers, so a JPEG cut short passes it: it is also decoded, at 1/8 scale (``draft``: a fraction
    of the cost, and it still reads every byte of the data)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.draft(im.mode, (1, 1))
            im.load()
        return True
    except UNREADABLE:
        return False


def try_read(path: str, size: int) -> np.ndarray | None:
    try:
        return read_image(path, size)
    except UNREADABLE:
        return None


class ImageFiles:
    """Image files read on demand: the pixel pool of a set too large to hold decoded (``data.storage``).

    It stands in for the uint8 (N, C, S, S) array of an in-memory pool: ``files[idx]`` decodes the
    files at positions ``idx`` into that layout. Pickling it sends the paths, not pixels, so trials
    share it through the object store at no cost and each decodes its own batches.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = list(paths), int(size)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    @property
    def nbytes(self) -> int:
        """What the decoded set would take in memory."""
        return len(self.paths) * 3 * self.size * self.size

    def __getitem__(self, idx: Any) -> np.ndarray:
        positions = np.arange(len(self.paths))[idx]
        if positions.ndim == 0:
            return read_image(self.paths[int(positions)], self.size)
        out = np.empty((len(positions), 3, self.size, self.size), np.uint8)
        for j, i in enumerate(positions.tolist()):
            out[j] = read_image(self.paths[i], self.size)
        return out
