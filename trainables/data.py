"""Datasets as uint8 NCHW arrays, decoded once, plus deterministic stratified splits.

A dataset is loaded once (by the driver) into ``Pools``: a train pool and, where the dataset has
one, a test pool. Every split a trial needs — test carved from the train pool when there is no
test pool, validation, the search-time training fraction, per-class caps — is a set of indices
into those arrays, computed from ``split_seed`` alone, so concurrent trials share one copy of the
pixels and the test images are the same for every trial and every seed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
CACHE_DIR = Path(os.environ.get("TUNE_CACHE_DIR", Path.home() / ".cache" / "tune-run"))


class DataError(ValueError):
    """The data section points at data that is not there or not in a known layout."""


class DamagedFile(DataError):
    """A file a saved model's folder holds is damaged; the message starts with its path."""

    names_file = True  # the CLI prints the message as is, without a file of its own in front

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"{path}: {message}")


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
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError)


def _readable(path: str) -> bool:
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
    except _UNREADABLE:
        return False


def _try_read(path: str, size: int) -> np.ndarray | None:
    try:
        return read_image(path, size)
    except _UNREADABLE:
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


@dataclass
class Pools:
    """Pixels (uint8, N x C x H x W; ``ImageFiles`` when streamed) and integer labels; ``test_*`` is None
    when the set has no test split."""

    name: str
    classes: list[str]
    train_x: np.ndarray | ImageFiles
    train_y: np.ndarray
    test_x: np.ndarray | ImageFiles | None = None
    test_y: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (data.on_bad_image: skip)
    test_skipped: int = 0  # how many of ``skipped`` were test files

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])

    @property
    def streamed(self) -> bool:
        return isinstance(self.train_x, ImageFiles)

    def pool(self, from_train: bool) -> tuple[np.ndarray | ImageFiles, np.ndarray]:
        """(pixels, labels) of the pool a split's indices point into: the train pool, or the test split's own."""
        if from_train:
            return self.train_x, self.train_y
        if self.test_x is None or self.test_y is None:
            raise ValueError(f"{self.name} has no test split of its own: its test images come from the train pool")
        return self.test_x, self.test_y


@dataclass
class Splits:
    """Indices into a ``Pools``; ``test_from_train`` says which pool ``test`` indexes."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_from_train: bool


# --------------------------------------------------------------------------- loaders

_LOADERS: dict[str, Callable[[dict[str, Any]], Pools]] = {}


def register_dataset(name: str) -> Callable[[Callable[[dict[str, Any]], Pools]], Callable[[dict[str, Any]], Pools]]:
    def wrap(fn: Callable[[dict[str, Any]], Pools]) -> Callable[[dict[str, Any]], Pools]:
        _LOADERS[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_LOADERS)


def load_pools(data: dict[str, Any]) -> Pools:
    """Load the dataset named by ``data["dataset"]`` (a resolved data section)."""
    name = data["dataset"]
    if name not in _LOADERS:
        raise DataError(f"data.dataset: unknown dataset {name!r}; allowed: {', '.join(list_datasets())}")
    return with_positive_class(_LOADERS[name](data), data.get("positive_class"))


def with_positive_class(pools: Pools, positive: str | None) -> Pools:
    """A binary task's classes ordered so ``positive`` is class 1 — the class that thresholds (P(class 1)),
    AUC and the positive-class precision/recall/F1 refer to — with both pools' labels remapped alike.
    None keeps the sorted order: the second class is positive."""
    if positive is None:
        return pools
    if positive not in pools.classes:
        raise DataError(f"data.positive_class: {positive!r} is not a class; classes: {', '.join(pools.classes)}")
    if pools.num_classes != 2:
        raise DataError(f"data.positive_class: binary tasks only (2 classes), got {pools.num_classes} classes")
    if pools.classes[1] == positive:
        return pools
    return Pools(
        pools.name,
        pools.classes[::-1],
        pools.train_x,
        1 - pools.train_y,
        pools.test_x,
        None if pools.test_y is None else 1 - pools.test_y,
        pools.skipped,
        pools.test_skipped,
    )


@register_dataset("digits")
def _digits(data: dict[str, Any]) -> Pools:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 8x8 grey levels 0..16 -> 0..255; shipped with scikit-learn, so it works offline.
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]
    return Pools("digits", [str(c) for c in d.target_names], x, d.target.astype(np.int64))


@register_dataset("synthetic")
def _synthetic(data: dict[str, Any]) -> Pools:
    """Class-conditional noisy patterns: learnable, any size, no files. Content is fixed (seed 0)."""
    rng = np.random.default_rng(0)
    k, n, s = int(data["num_classes"]), int(data["num_samples"]), int(data["image_size"] or 16)
    protos = rng.uniform(0, 255, size=(k, 3, 4, 4))
    protos = protos.repeat(-(-s // 4), axis=2).repeat(-(-s // 4), axis=3)[:, :, :s, :s]
    y = np.arange(n) % k
    x = protos[y] + rng.normal(0, 60, size=(n, 3, s, s))
    return Pools("synthetic", [f"class{i}" for i in range(k)], np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64))


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


def _cifar(data: dict[str, Any], which: str) -> Pools:
    """CIFAR from ``data.root`` (the pickle layout, or train/ and test/ class folders), else torchvision's download."""
    folder_name = _CIFAR[which][0]
    root = data.get("root")
    base = Path(root).expanduser() if root else CACHE_DIR / "data"
    if root and (base / "train").is_dir():
        return _folder_tree(data, which)
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


@register_dataset("cifar10")
def _cifar10(data: dict[str, Any]) -> Pools:
    return _cifar(data, "cifar10")


@register_dataset("cifar100")
def _cifar100(data: dict[str, Any]) -> Pools:
    return _cifar(data, "cifar100")


@register_dataset("imagefolder")
def _imagefolder(data: dict[str, Any]) -> Pools:
    if not data.get("root"):
        raise DataError(
            "data.root: imagefolder needs a root folder (class-per-folder, optionally under train/ and test/)"
        )
    return _folder_tree(data, "imagefolder")


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
        except _UNREADABLE:
            continue
    raise DataError(f"data.root: none of the {len(items)} image files can be read, e.g. {items[0][0]!r}")


def _decode(items: list[tuple[str, int]], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels and labels of the readable files, and the positions of the unreadable ones."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda p: _try_read(p, size), (p for p, _ in items), chunksize=256))
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
            ok = list(pool.map(_readable, (p for p, _ in items)))
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
    except _UNREADABLE as err:
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return "it fails PIL's verify()"


def _folder_tree(data: dict[str, Any], name: str) -> Pools:
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


def relabel(pools: Pools, classes: list[str], where: str) -> Pools:
    """``pools`` with its labels in the order of ``classes`` (a model's); DataError naming the classes that differ."""
    if pools.classes == classes:
        return pools
    extra = sorted(set(pools.classes) - set(classes))
    missing = sorted(set(classes) - set(pools.classes))
    if extra or missing:
        raise DataError(
            f"{where}: classes do not match the model's: not in the model {extra}, missing {missing} "
            f"(the model knows {classes})"
        )
    order = np.asarray([classes.index(c) for c in pools.classes], np.int64)
    return Pools(
        pools.name,
        list(classes),
        pools.train_x,
        order[pools.train_y],
        pools.test_x,
        None if pools.test_y is None else order[pools.test_y],
        pools.skipped,
        pools.test_skipped,
    )


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


def whole_splits(pools: Pools) -> Splits:
    every = np.arange(len(pools.train_y))
    return Splits(every, every, every, True)


# --------------------------------------------------------------------------- splits


def stratified_take(
    labels: np.ndarray, fraction: float, rng: np.random.Generator, cap: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class into (taken, rest): ``round(fraction * n_c)`` of each class, at most ``cap``.

    Every class with at least two members keeps at least one on each side, so small classes are
    neither dropped from a split nor left with nothing to train on.
    """
    taken, rest = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        if 0 < fraction < 1 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        if cap is not None:
            k = min(k, cap)
        taken.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(taken)), np.sort(np.concatenate(rest))


def make_splits(pools: Pools, data: dict[str, Any]) -> Splits:
    """Deterministic, stratified splits from ``split_seed``.

    Each step draws from its own seeded stream, so the test split does not move when
    ``val_fraction`` or ``train_fraction`` change, and validation does not move with
    ``train_fraction``.
    """
    seed = int(data["split_seed"])
    y = pools.train_y
    pool_idx = np.arange(len(y))
    if pools.test_x is None or pools.test_y is None:
        test, pool_idx = stratified_take(y, float(data["test_fraction"]), np.random.default_rng([seed, 0]))
        test_from_train = True
    else:
        test, test_from_train = np.arange(len(pools.test_y)), False
    val_rel, train_rel = stratified_take(
        y[pool_idx], float(data["val_fraction"]), np.random.default_rng([seed, 1]), cap=data.get("val_max_per_class")
    )
    val, train = pool_idx[val_rel], pool_idx[train_rel]
    frac, cap = float(data["train_fraction"]), data.get("max_per_class")
    if frac < 1.0 or cap is not None:
        keep, _ = stratified_take(y[train], frac, np.random.default_rng([seed, 2]), cap=cap)
        train = train[keep]
    return Splits(train, val, test, test_from_train)


# --------------------------------------------------------------------------- spec schema

# key -> (type, default[, allowed values]); ``None`` defaults take the type named first.
DATA_SCHEMA: dict[str, tuple[Any, ...]] = {
    "dataset": (str, None),  # required: a registered dataset
    "root": (str, None),  # local data; None = torchvision download into the cache
    "download": (bool, True),  # torchvision download when root lacks the files
    "image_size": (int, None),  # None = the dataset's native size
    "val_fraction": (float, 0.1),  # of the train pool, stratified
    "test_fraction": (float, 0.2),  # carved from the train pool when the dataset has no test split
    "train_fraction": (float, 1.0),  # of the training split used by search trials, stratified
    "max_per_class": (int, None),  # cap on training images per class (balanced subsample)
    "load_max_per_class": (int, None),  # imagefolder: files read per class (seeded), before any split;
    # a tree larger than memory is never decoded whole (paper 000)
    "storage": (str, "auto", ("auto", "memory", "stream")),  # files: decode once into shared memory, or
    # read every epoch by loader workers; auto streams past max_memory_gb
    "max_memory_gb": (float, None),  # auto's limit on decoded pixels; None = 1/4 of available memory
    "workers": (int, 4),  # streaming only: decoding processes per trial (in-memory: none)
    "val_max_per_class": (int, None),  # cap on validation images per class
    "split_seed": (int, 0),  # every split above
    "on_bad_image": (str, "skip", ("skip", "error")),  # imagefolder: leave unreadable files out (listed in
    # the study folder), or stop naming the first
    "positive_class": (str, None),  # binary tasks: the class that is class 1 (thresholds, recall,
    # AUC); None = the second of the sorted class names
    "mean": (list, None),  # per-channel, 0..1 scale; None = from the training split
    "std": (list, None),
    "num_classes": (int, 10),  # synthetic only
    "num_samples": (int, 2000),  # synthetic only
    "augment": (dict, None),  # see trainables.augment.AUGMENT_DEFAULTS
}

# Keys the driver reads once, to load and split the set for every trial (``load_pools``, ``make_splits``):
# a trial's own value would be ignored, or would move the validation/test split between trials.
NOT_SEARCHABLE: dict[str, str] = {
    "dataset": "the driver loads one dataset for all trials; run one study per dataset",
    "root": "the driver loads the data once for all trials; run one study per data.root",
    "download": "the driver loads the data once for all trials",
    "load_max_per_class": "the driver reads the files once for all trials, before any split",
    "on_bad_image": "the driver reads the files once for all trials",
    "positive_class": "the driver orders the classes once for all trials (and metrics name the positive one)",
    "storage": "the driver decides once whether the set is held in memory or streamed",
    "max_memory_gb": "the driver decides once whether the set is held in memory or streamed",
    "split_seed": "it would move the test and validation split between trials (scores not comparable, "
    "test images trained on)",
    "val_fraction": "it would move the validation split between trials (scores not comparable)",
    "test_fraction": "it would move the test split between trials (test images trained on)",
    "num_classes": "the driver generates the synthetic set once for all trials",
    "num_samples": "the driver generates the synthetic set once for all trials",
}

# (side, channels) when no image_size is given; imagefolder reads it from its first image.
NATIVE = {"digits": (8, 1), "cifar10": (32, 3), "cifar100": (32, 3), "synthetic": (16, 3), "imagefolder": (None, 3)}
