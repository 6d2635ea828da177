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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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
    """One image file as uint8 (3, size, size): RGB, resized square (aspect ratio not kept, as in paper 002)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


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
    return Pools(pools.name, pools.classes[::-1], pools.train_x, 1 - pools.train_y, pools.test_x,
                 None if pools.test_y is None else 1 - pools.test_y)


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
        raise DataError(f"data.storage: stream reads image files; {str(base)!r} has no train/ class folders "
                        f"(the pickle layout is loaded whole: use auto or memory)")
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
        raise DataError("data.root: imagefolder needs a root folder (class-per-folder, optionally under train/ and test/)")
    return _folder_tree(data, "imagefolder")


def _list_images(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = [(str(f), i) for i, c in enumerate(classes) for f in sorted((folder / c).rglob("*"))
             if f.suffix.lower() in IMAGE_EXTS]
    return classes, items


def _image_side(items: list[tuple[str, int]], size: int | None) -> int:
    """``size``, or when None the first image's width (images are resized square)."""
    if size is not None:
        return int(size)
    from PIL import Image

    with Image.open(items[0][0]) as im:
        return int(im.size[0])


def _decode(items: list[tuple[str, int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        x = np.stack(list(pool.map(lambda p: read_image(p, size), (p for p, _ in items), chunksize=256)))
    return x, np.asarray([c for _, c in items], np.int64)


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
    return classes, items


def _cached_decode(folder: Path, items: list[tuple[str, int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``items`` once at ``size``; later loads of the same files read a cache."""
    h = hashlib.sha1(f"{folder.resolve()}|{size}".encode())
    for path, c in items:
        st = os.stat(path)
        h.update(f"{path}|{c}|{st.st_size}|{st.st_mtime_ns}".encode())
    cache = CACHE_DIR / "imagefolder" / f"{h.hexdigest()[:20]}.npz"
    shape = (len(items), 3, size, size)
    cached = _read_cache(cache, shape)
    if cached is not None:
        return cached
    x, y = _decode(items, size)
    _write_cache(cache, x, y)
    return x, y


def _read_cache(cache: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or not what we wrote: plain uint8 pixels of
    ``shape`` and int64 labels. Never unpickles (a replaced file must not run code): it is then decoded again."""
    try:
        with np.load(cache, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile):
        return None
    if x.dtype != np.uint8 or x.shape != shape or y.dtype != np.int64 or y.shape != shape[:1]:
        return None
    return x, y


def _write_cache(cache: Path, x: np.ndarray, y: np.ndarray) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, x=x, y=y)  # arrays only: no pickle in the file
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


def _pool(folder: Path, items: list[tuple[str, int]], size: int, stream: bool) -> tuple[np.ndarray | ImageFiles, np.ndarray]:
    if stream:
        return ImageFiles([p for p, _ in items], size), np.asarray([c for _, c in items], np.int64)
    return _cached_decode(folder, items, size)


def _folder_tree(data: dict[str, Any], name: str) -> Pools:
    root = Path(data["root"]).expanduser().resolve()  # streamed paths are read in trials' own working folders
    if not root.is_dir():
        raise DataError(f"data.root: {str(root)!r} is not a folder")
    cap, seed = data.get("load_max_per_class"), int(data.get("split_seed", 0))
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes, items = _listed(train_dir, cap, seed)
    test_items: list[tuple[str, int]] = []
    if train_dir != root and (root / "test").is_dir():
        test_classes, test_items = _listed(root / "test")
        if test_classes != classes:
            raise DataError(f"data.root: test/ classes {test_classes} differ from train/ classes {classes}")
    size = _image_side(items, data.get("image_size"))
    stream = streams(data, (len(items) + len(test_items)) * 3 * size * size)
    x, y = _pool(train_dir, items, size, stream)
    if test_items:
        tx, ty = _pool(root / "test", test_items, size, stream)
        return Pools(name, classes, x, y, tx, ty)
    return Pools(name, classes, x, y)


def relabel(pools: Pools, classes: list[str], where: str) -> Pools:
    """``pools`` with its labels in the order of ``classes`` (a model's); DataError naming the classes that differ."""
    if pools.classes == classes:
        return pools
    extra = sorted(set(pools.classes) - set(classes))
    missing = sorted(set(classes) - set(pools.classes))
    if extra or missing:
        raise DataError(f"{where}: classes do not match the model's: not in the model {extra}, missing {missing} "
                        f"(the model knows {classes})")
    order = np.asarray([classes.index(c) for c in pools.classes], np.int64)
    return Pools(pools.name, list(classes), pools.train_x, order[pools.train_y],
                 pools.test_x, None if pools.test_y is None else order[pools.test_y])


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
    x, y = _pool(folder, items, size, stream)
    if in_chans == 1:  # a greyscale model (digits): ITU-R 601 luma, as PIL's "L" mode
        x = np.tensordot(np.array([0.299, 0.587, 0.114]), x.astype(np.float32), axes=([0], [1]))
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)[:, None]
    return Pools(f"folder {folder}", classes, x, y)


def whole_splits(pools: Pools) -> Splits:
    every = np.arange(len(pools.train_y))
    return Splits(every, every, every, True)


# --------------------------------------------------------------------------- splits


def stratified_take(labels: np.ndarray, fraction: float, rng: np.random.Generator,
                    cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
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
    if pools.test_x is None:
        test, pool_idx = stratified_take(y, float(data["test_fraction"]), np.random.default_rng([seed, 0]))
        test_from_train = True
    else:
        test, test_from_train = np.arange(len(pools.test_y)), False
    val_rel, train_rel = stratified_take(y[pool_idx], float(data["val_fraction"]), np.random.default_rng([seed, 1]),
                                         cap=data.get("val_max_per_class"))
    val, train = pool_idx[val_rel], pool_idx[train_rel]
    frac, cap = float(data["train_fraction"]), data.get("max_per_class")
    if frac < 1.0 or cap is not None:
        keep, _ = stratified_take(y[train], frac, np.random.default_rng([seed, 2]), cap=cap)
        train = train[keep]
    return Splits(train, val, test, test_from_train)


# --------------------------------------------------------------------------- spec schema

# key -> (type, default[, allowed values]); ``None`` defaults take the type named first.
DATA_SCHEMA: dict[str, tuple[Any, ...]] = {
    "dataset": (str, None),                 # required: a registered dataset
    "root": (str, None),                    # local data; None = torchvision download into the cache
    "download": (bool, True),               # torchvision download when root lacks the files
    "image_size": (int, None),              # None = the dataset's native size
    "val_fraction": (float, 0.1),           # of the train pool, stratified
    "test_fraction": (float, 0.2),          # carved from the train pool when the dataset has no test split
    "train_fraction": (float, 1.0),         # of the training split used by search trials, stratified
    "max_per_class": (int, None),           # cap on training images per class (balanced subsample)
    "load_max_per_class": (int, None),      # imagefolder: files read per class (seeded), before any split;
                                            # a tree larger than memory is never decoded whole (paper 000)
    "storage": (str, "auto", ("auto", "memory", "stream")),  # files: decode once into shared memory, or
                                            # read every epoch by loader workers; auto streams past max_memory_gb
    "max_memory_gb": (float, None),         # auto's limit on decoded pixels; None = 1/4 of available memory
    "workers": (int, 4),                    # streaming only: decoding processes per trial (in-memory: none)
    "val_max_per_class": (int, None),       # cap on validation images per class
    "split_seed": (int, 0),                 # every split above
    "positive_class": (str, None),          # binary tasks: the class that is class 1 (thresholds, recall,
                                            # AUC); None = the second of the sorted class names
    "mean": (list, None),                   # per-channel, 0..1 scale; None = from the training split
    "std": (list, None),
    "num_classes": (int, 10),               # synthetic only
    "num_samples": (int, 2000),             # synthetic only
    "augment": (dict, None),                # see trainables.augment.AUGMENT_DEFAULTS
}

# Keys the driver reads once, to load and split the set for every trial (``load_pools``, ``make_splits``):
# a trial's own value would be ignored, or would move the validation/test split between trials.
NOT_SEARCHABLE: dict[str, str] = {
    "dataset": "the driver loads one dataset for all trials; run one study per dataset",
    "root": "the driver loads the data once for all trials; run one study per data.root",
    "download": "the driver loads the data once for all trials",
    "load_max_per_class": "the driver reads the files once for all trials, before any split",
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
