"""Datasets on disk: class-per-folder image trees (listed and checked, then decoded once through a cache under
``CACHE_DIR`` or streamed, as memory allows) and CIFAR's pickle batches (downloaded into the same cache).

``CACHE_DIR`` is read here at call time: a test or a process that moves the cache sets it on this module.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .data import DataError, Pools
from .images import UNREADABLE, ImageFiles, read_image, readable, try_read

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
CACHE_DIR = Path(os.environ.get("TUNE_CACHE_DIR", Path.home() / ".cache" / "tune-run"))


_CIFAR = {  # folder, train files, test files, label key
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def _read_cifar_batches(folder: Path, which: str) -> Pools:
    """Read the python-pickle CIFAR layout that torchvision downloads (no checksum: local copies may be re-packed)."""
    _, train_files, test_files, label_key = _CIFAR[which]

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in files:
            with open(folder / name, "rb") as f:
                d = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    meta_name = "batches.meta" if which == "cifar10" else "meta"
    with open(folder / meta_name, "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    classes = meta.get("label_names") or meta.get("fine_label_names")
    x, y = read(train_files)
    tx, ty = read(test_files)
    return Pools(which, list(classes), x, y, tx, ty)


def cifar(data: dict[str, Any], which: str) -> Pools:
    """CIFAR from ``data.root`` (the pickle layout, or train/ and test/ class folders), else torchvision's download."""
    folder_name = _CIFAR[which][0]
    root = data.get("root")
    base = Path(root).expanduser() if root else CACHE_DIR / "data"
    if root and (base / "train").is_dir():
        return folder_tree(data, which)
    if data.get("storage") == "stream":
        raise DataError(
            f"data.storage: stream reads image files; {str(base)!r} has no train/ class folders "
            f"(the pickle layout is loaded whole: use auto or memory)"
        )
    folder = base if base.name == folder_name else base / folder_name
    if not folder.is_dir():
        if not data.get("download", True):
            raise DataError(f"data.root: no {folder_name}/ or train/ + test/ folders under {str(base)!r}")
        from torchvision import datasets

        cls = datasets.CIFAR10 if which == "cifar10" else datasets.CIFAR100
        try:
            cls(str(folder.parent), train=True, download=True)
        except Exception as exc:  # offline: URLError, RuntimeError
            raise DataError(
                f"data.root: no {which} under {str(base)!r} and the download failed ({type(exc).__name__}); give "
                f"data.root a folder holding {folder_name}/ or a class-per-folder tree with train/ and test/"
            ) from exc
    return _read_cifar_batches(folder, which)


def _list_images(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    # By extension only: notes.txt, .DS_Store, Thumbs.db and macOS "._x.jpg" forks are not images.
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = [
        (str(f), i)
        for i, c in enumerate(classes)
        for f in sorted((folder / c).rglob("*"))
        if f.suffix.lower() in IMAGE_EXTS and not f.name.startswith(".") and f.is_file()
    ]
    return classes, items


def _image_side(items: list[tuple[str, int]], size: int | None) -> int:
    """``size``, or when None the first image's width (images are resized square)."""
    if size is not None:
        return int(size)
    from PIL import Image

    for path, _ in items:  # the first readable one: an unreadable file is the decoder's to skip or report
        try:
            with Image.open(path) as im:
                return int(im.size[0])
        except UNREADABLE:
            continue
    raise DataError(f"data.root: none of the {len(items)} image files can be read, e.g. {items[0][0]!r}")


def _decode(items: list[tuple[str, int]], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels and labels of the readable files, and the positions of the unreadable ones."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda p: try_read(p, size), (p for p, _ in items), chunksize=256))
    bad = np.asarray([i for i, im in enumerate(images) if im is None], np.int64)
    kept = [im for im in images if im is not None]
    x = np.stack(kept) if kept else np.empty((0, 3, size, size), np.uint8)
    return x, np.asarray([c for (_, c), im in zip(items, images) if im is not None], np.int64), bad


def _cap_items(items: list[tuple[str, int]], cap: int | None, seed: int) -> list[tuple[str, int]]:
    """At most ``cap`` files per class, a seeded random choice, in listing order."""
    if cap is None:
        return items
    rng = np.random.default_rng([seed, 3])
    labels = np.asarray([c for _, c in items])
    keep: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep += rng.permutation(idx)[:cap].tolist()
    return [items[i] for i in sorted(keep)]


def _listed(folder: Path, cap: int | None = None, seed: int = 0) -> tuple[list[str], list[tuple[str, int]]]:
    classes, items = _list_images(folder)
    items = _cap_items(items, cap, seed)
    if not items:
        raise DataError(f"data.root: no images ({', '.join(IMAGE_EXTS)}) in class folders under {str(folder)!r}")
    _check_classes(folder, classes, np.asarray([c for _, c in items]), "has no images")
    return classes, items


def _check_classes(folder: Path, classes: list[str], labels: np.ndarray, why: str) -> None:
    """Every class folder holds at least one image (an empty one would be a class never seen)."""
    counts = np.bincount(labels, minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(
            f"data.root: class folder {str(folder / empty[0])!r} {why} ({', '.join(IMAGE_EXTS)}); "
            f"every class folder needs at least one image"
        )


def _cached_decode(folder: Path, items: list[tuple[str, int]], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode ``items`` once at ``size``; later loads of the same files read a cache."""
    h = hashlib.sha1(f"{folder.resolve()}|{size}".encode())
    for path, c in items:
        st = os.stat(path)
        h.update(f"{path}|{c}|{st.st_size}|{st.st_mtime_ns}".encode())
    cache = CACHE_DIR / "imagefolder" / f"{h.hexdigest()[:20]}.npz"
    cached = _read_cache(cache, len(items), size)
    if cached is not None:
        return cached
    x, y, bad = _decode(items, size)
    _write_cache(cache, x, y, bad)
    return x, y, bad


def _read_cache(cache: Path, n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or not what we wrote: uint8 pixels and int64
    labels of the readable files, int64 positions of the ``n`` files that were not. Never unpickles (a
    replaced file must not run code): it is then decoded again."""
    try:
        with np.load(cache, allow_pickle=False) as f:
            x, y, bad = f["x"], f["y"], f["bad"]
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile):
        return None
    kept = n - len(bad)
    if (
        x.dtype != np.uint8
        or x.shape != (kept, 3, size, size)
        or y.dtype != np.int64
        or y.shape != (kept,)
        or bad.dtype != np.int64
        or bad.ndim != 1
    ):
        return None
    return x, y, bad


def _write_cache(cache: Path, x: np.ndarray, y: np.ndarray, bad: np.ndarray) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, x=x, y=y, bad=bad)  # arrays only: no pickle in the file
    os.replace(tmp, cache)  # atomic: a concurrent reader never sees half a file


def available_memory() -> int:
    """Bytes the host can still give (MemAvailable on Linux; free physical pages elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def streams(data: dict[str, Any], decoded_bytes: int) -> bool:
    """Whether a file-backed set is read from disk every epoch rather than decoded once into memory."""
    storage = data.get("storage", "auto")
    if storage != "auto":
        return storage == "stream"
    limit = data.get("max_memory_gb")
    # A quarter of what is free: the one shared copy lives in Ray's object store, 30 % of memory by default.
    budget = float(limit) * 2**30 if limit is not None else available_memory() / 4
    return decoded_bytes > budget


def _pool(
    folder: Path, items: list[tuple[str, int]], size: int, stream: bool, data: dict[str, Any]
) -> tuple[np.ndarray | ImageFiles, np.ndarray, list[str]]:
    """Pixels (or files) and labels of the readable ``items``, and the unreadable files' paths; with
    ``data.on_bad_image: error`` the first unreadable file is a DataError instead."""
    if stream:  # files are decoded later, in loader workers: check them all now, under the same rule
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            ok = list(pool.map(readable, (p for p, _ in items)))
        bad = [p for (p, _), good in zip(items, ok) if not good]
        items = [it for it, good in zip(items, ok) if good]
        x: np.ndarray | ImageFiles = ImageFiles([p for p, _ in items], size)
        y = np.asarray([c for _, c in items], np.int64)
    else:
        x, y, positions = _cached_decode(folder, items, size)
        bad = [items[i][0] for i in positions.tolist()]
    if bad and data.get("on_bad_image", "skip") == "error":
        raise DataError(
            f"data.root: {bad[0]!r} is not a readable image ({_why_unreadable(bad[0])}); "
            f"{len(bad)} such file(s); data.on_bad_image: skip leaves them out"
        )
    return x, y, bad


def _why_unreadable(path: str) -> str:
    try:
        read_image(path, 8)
    except UNREADABLE as err:
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return "it fails PIL's verify()"


def folder_tree(data: dict[str, Any], name: str) -> Pools:
    train_dir, test_dir, classes, items, test_items = list_tree(data)
    size = _image_side(items, data.get("image_size"))
    stream = streams(data, (len(items) + len(test_items)) * 3 * size * size)
    x, y, skipped = _pool(train_dir, items, size, stream, data)
    _check_classes(train_dir, classes, y, "has no readable images")
    if test_dir is not None:
        tx, ty, test_skipped = _pool(test_dir, test_items, size, stream, data)
        _check_classes(test_dir, classes, ty, "has no readable images")
        return Pools(name, classes, x, y, tx, ty, skipped + test_skipped, len(test_skipped))
    return Pools(name, classes, x, y, skipped=skipped)


def list_tree(
    data: dict[str, Any],
) -> tuple[Path, Path | None, list[str], list[tuple[str, int]], list[tuple[str, int]]]:
    """A class-per-folder ``data.root`` listed, nothing decoded: (train folder, test folder or None, classes,
    train items, test items). DataError when it is not a tree a classifier can be trained on."""
    root = Path(data["root"]).expanduser().resolve()  # streamed paths are read in trials' own working folders
    if not root.is_dir():
        raise DataError(f"data.root: {str(root)!r} is not a folder")
    cap, seed = data.get("load_max_per_class"), int(data.get("split_seed", 0))
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes, items = _listed(train_dir, cap, seed)
    if len(classes) < 2:
        raise DataError(
            f"data.root: {str(train_dir)!r} has {len(classes)} class folder ({', '.join(classes)}); "
            f"a classifier needs at least 2 classes, one folder of images each"
        )
    if train_dir == root or not (root / "test").is_dir():
        return train_dir, None, classes, items, []
    test_classes, test_items = _listed(root / "test")
    if test_classes != classes:
        raise DataError(f"data.root: test/ classes {test_classes} differ from train/ classes {classes}")
    return train_dir, root / "test", classes, items, test_items


def tree_summary(data: dict[str, Any]) -> list[str]:
    """What ``--dry-run`` reports of a folder ``data.root``: its class counts per split, from listing files
    only (nothing decoded). [] when the data is not a class-per-folder tree. DataError when it is a bad one."""
    if data.get("dataset") != "imagefolder" or not data.get("root"):
        return []
    train_dir, test_dir, classes, items, test_items = list_tree(data)
    lines = []
    for split, folder, its in (("train", train_dir, items), ("test", test_dir, test_items)):
        if folder is None:
            continue
        counts = np.bincount([c for _, c in its], minlength=len(classes))
        per = ", ".join(f"{c} {n}" for c, n in zip(classes, counts.tolist()))
        lines.append(f"{split} ({folder}): {len(its):,} images, {len(classes)} classes: {per}")
    if test_dir is None:
        lines.append(f"test: carved from train (data.test_fraction={data.get('test_fraction', 0.2)})")
    return lines


def split_folder(root: str | Path, split: str) -> Path | None:
    """The class-per-folder tree under ``root`` that is all of ``split``: ``root/<split>/``, else ``root``
    itself when it is one plain class tree; None for anything else (a pickle layout, a train/ + test/
    tree without that split), which the dataset's own loader and splits handle."""
    root = Path(root).expanduser().resolve()
    if (root / split).is_dir():
        return root / split
    if not root.is_dir() or any((root / s).is_dir() for s in ("train", "val", "test")):
        return None
    return root if _list_images(root)[1] else None


def load_folder(folder: Path, size: int, in_chans: int, data: dict[str, Any]) -> Pools:
    """Every image under a class-per-folder ``folder``, decoded at ``size`` with ``in_chans`` channels, as
    the train pool (``whole_splits`` makes all of it any split)."""
    classes, items = _listed(folder)
    stream = in_chans == 3 and streams(data, len(items) * 3 * size * size)
    x, y, skipped = _pool(folder, items, size, stream, data)
    if in_chans == 1:  # a greyscale model (digits): ITU-R 601 luma, as PIL's "L" mode
        assert isinstance(x, np.ndarray)  # only RGB sets stream
        x = np.tensordot(np.array([0.299, 0.587, 0.114]), x.astype(np.float32), axes=([0], [1]))
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)[:, None]
    return Pools(f"folder {folder}", classes, x, y, skipped=skipped)
