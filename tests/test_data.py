"""Datasets and splits: deterministic, stratified, test split fixed; class-per-folder and CIFAR layouts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tests.conftest import make_image_tree
from trainables.data import DataError, Pools, make_splits, stratified_take
from trainables.datasets import load_pools
from trainables.images import ImageFiles

DATA = {
    "dataset": "digits",
    "root": None,
    "download": False,
    "image_size": None,
    "val_fraction": 0.2,
    "test_fraction": 0.2,
    "train_fraction": 1.0,
    "max_per_class": None,
    "val_max_per_class": None,
    "split_seed": 0,
    "num_classes": 10,
    "num_samples": 500,
}


def test_digits_pool():
    p = load_pools(DATA)
    assert p.train_x.dtype == np.uint8 and p.train_x.shape == (1797, 1, 8, 8)
    assert p.num_classes == 10 and p.test_x is None


def test_splits_deterministic_disjoint_stratified():
    p = load_pools(DATA)
    a, b = make_splits(p, DATA), make_splits(p, DATA)
    for k in ("train", "val", "test"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    assert not set(a.train) & set(a.val) and not set(a.train) & set(a.test) and not set(a.val) & set(a.test)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    overall = np.bincount(p.train_y) / len(p.train_y)
    for idx in (a.train, a.val, a.test):
        share = np.bincount(p.train_y[idx], minlength=10) / len(idx)
        assert np.abs(share - overall).max() < 0.02
    c = make_splits(p, {**DATA, "split_seed": 1})
    assert not np.array_equal(a.val, c.val)


def test_test_split_does_not_move_with_search_settings():
    p = load_pools(DATA)
    a = make_splits(p, DATA)
    b = make_splits(p, {**DATA, "val_fraction": 0.1, "train_fraction": 0.3})
    assert np.array_equal(a.test, b.test)
    c = make_splits(p, {**DATA, "train_fraction": 0.3})
    assert np.array_equal(a.val, c.val) and set(c.train) <= set(a.train)


def test_train_fraction_and_caps_are_stratified():
    p = load_pools(DATA)
    s = make_splits(p, {**DATA, "train_fraction": 0.25})
    counts = np.bincount(p.train_y[s.train], minlength=10)
    full = np.bincount(p.train_y[make_splits(p, DATA).train], minlength=10)
    assert np.all(np.abs(counts - full * 0.25) <= 1)
    capped = make_splits(p, {**DATA, "max_per_class": 5, "val_max_per_class": 3})
    assert np.all(np.bincount(p.train_y[capped.train], minlength=10) == 5)
    assert np.all(np.bincount(p.train_y[capped.val], minlength=10) == 3)


def test_a_capped_test_split_is_a_stratified_part_of_the_whole_and_moves_nothing_else():
    """data.test_max_per_class (a smoke run's 100): a seeded draw from the test split as it would be, per class; the
    images it leaves out join neither training nor validation, which stay as they were. A separate test set too."""
    p = load_pools(DATA)
    whole, capped = make_splits(p, DATA), make_splits(p, {**DATA, "test_max_per_class": 5})
    assert set(capped.test) < set(whole.test) and np.all(np.bincount(p.train_y[capped.test], minlength=10) == 5)
    assert np.array_equal(capped.train, whole.train) and np.array_equal(capped.val, whole.val)
    assert np.array_equal(capped.test, make_splits(p, {**DATA, "test_max_per_class": 5}).test)  # seeded
    separate = Pools(p.name, p.classes, p.train_x, p.train_y, p.train_x[:300], p.train_y[:300])
    split = make_splits(separate, {**DATA, "test_max_per_class": 4})
    assert not split.test_from_train and np.all(np.bincount(separate.test_y[split.test], minlength=10) == 4)


def test_small_classes_keep_one_on_each_side():
    y = np.array([0] * 50 + [1] * 2)
    taken, rest = stratified_take(y, 0.1, np.random.default_rng(0))
    assert set(y[taken]) == {0, 1} and set(y[rest]) == {0, 1}


def test_imagefolder_tree_with_and_without_test(tmp_path, monkeypatch):
    monkeypatch.setattr("trainables.folders.CACHE_DIR", tmp_path / "cache")
    make_image_tree(tmp_path / "a", {"cat": 5, "dog": 7}, size=10, split="train")
    make_image_tree(tmp_path / "a", {"cat": 2, "dog": 3}, size=10, split="test", seed=1)
    p = load_pools({**DATA, "dataset": "imagefolder", "root": str(tmp_path / "a"), "image_size": 8})
    assert p.classes == ["cat", "dog"] and p.train_x.shape == (12, 3, 8, 8) and p.test_x.shape == (5, 3, 8, 8)
    assert list(np.bincount(p.train_y)) == [5, 7]
    # Decoded once: the second load reads the cache, the same pixels.
    assert len(list((tmp_path / "cache" / "imagefolder").iterdir())) == 2
    q = load_pools({**DATA, "dataset": "imagefolder", "root": str(tmp_path / "a"), "image_size": 8})
    assert np.array_equal(p.train_x, q.train_x)
    make_image_tree(tmp_path / "b", {"x": 4, "y": 4, "z": 4}, size=10)
    flat = load_pools({**DATA, "dataset": "imagefolder", "root": str(tmp_path / "b")})
    assert flat.test_x is None and flat.train_x.shape == (12, 3, 10, 10)
    with pytest.raises(DataError, match="no images"):
        (tmp_path / "empty" / "c").mkdir(parents=True)
        load_pools({**DATA, "dataset": "imagefolder", "root": str(tmp_path / "empty")})


def test_streamed_pool_decodes_the_same_pixels_on_demand(tmp_path, monkeypatch):
    monkeypatch.setattr("trainables.folders.CACHE_DIR", tmp_path / "cache")
    make_image_tree(tmp_path / "a", {"cat": 5, "dog": 7}, size=10, split="train")
    make_image_tree(tmp_path / "a", {"cat": 2, "dog": 3}, size=10, split="test", seed=1)
    base = {**DATA, "dataset": "imagefolder", "root": str(tmp_path / "a"), "image_size": 8}
    mem = load_pools({**base, "storage": "memory"})
    st = load_pools({**base, "storage": "stream"})
    assert isinstance(st.train_x, ImageFiles) and isinstance(st.test_x, ImageFiles) and st.streamed
    assert not mem.streamed and st.train_x.shape == mem.train_x.shape == (12, 3, 8, 8)
    assert st.image_size == 8 and st.in_chans == 3 and st.train_x.nbytes == mem.train_x.nbytes
    assert np.array_equal(st.train_x[np.array([11, 0, 4])], mem.train_x[[11, 0, 4]])
    assert np.array_equal(st.train_x[3], mem.train_x[3])
    assert np.array_equal(st.test_x[:], mem.test_x) and np.array_equal(st.train_y, mem.train_y)
    # Through the object store a streamed pool is its file list, not its pixels.
    big = load_pools({**base, "storage": "stream", "image_size": 256})  # 2.4 MB of pixels if decoded
    assert len(pickle.dumps(big.train_x)) < sum(len(p) for p in big.train_x.paths) + 1000
    assert len(list((tmp_path / "cache" / "imagefolder").iterdir())) == 2  # the memory load's; streaming writes none
    # auto: in memory unless the decoded set passes max_memory_gb (12 + 5 images x 192 bytes here).
    assert not load_pools(base).streamed
    assert load_pools({**base, "max_memory_gb": 3000 / 2**30}).streamed
    assert not load_pools({**base, "max_memory_gb": 4000 / 2**30}).streamed


def test_streamed_files_are_found_from_any_working_directory(tmp_path, monkeypatch):
    # Ray runs each trial in its own folder: a relative data.root must not reach the trials as relative paths.
    make_image_tree(tmp_path / "a", {"cat": 2, "dog": 2}, size=8)
    monkeypatch.chdir(tmp_path)
    st = load_pools({**DATA, "dataset": "imagefolder", "root": "a", "image_size": 8, "storage": "stream"})
    monkeypatch.chdir(tmp_path / "a" / "cat")
    assert st.train_x[np.arange(4)].shape == (4, 3, 8, 8)


def test_load_cap_reads_a_balanced_seeded_subsample(tmp_path, monkeypatch):
    monkeypatch.setattr("trainables.folders.CACHE_DIR", tmp_path / "cache")
    make_image_tree(tmp_path / "t", {"coin": 9, "other": 30}, size=10)
    data = {**DATA, "dataset": "imagefolder", "root": str(tmp_path / "t"), "load_max_per_class": 6}
    p = load_pools(data)
    assert list(np.bincount(p.train_y)) == [6, 6]
    assert np.array_equal(p.train_x, load_pools(data).train_x)  # same seed, same files
    q = load_pools({**data, "split_seed": 1})
    assert not np.array_equal(p.train_x, q.train_x)


def test_cifar_pickle_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    for root in (tmp_path, folder):  # the parent, or the folder itself
        p = load_pools({**DATA, "dataset": "cifar10", "root": str(root)})
        assert p.train_x.shape == (20, 3, 32, 32) and p.test_x.shape == (4, 3, 32, 32) and p.num_classes == 10


def test_cifar_missing_offline_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        load_pools({**DATA, "dataset": "cifar10", "root": str(tmp_path), "download": False})


def test_shared_cifar_tree(cifar_root, tmp_path, monkeypatch):
    monkeypatch.setattr("trainables.folders.CACHE_DIR", tmp_path / "cache")
    p = load_pools({**DATA, "dataset": "cifar10", "root": str(cifar_root)})
    assert p.train_x.shape == (50_000, 3, 32, 32) and p.test_x.shape[0] == 5_000
    assert p.classes[0] == "airplane" and np.all(np.bincount(p.train_y) == 5000)


def test_pools_are_plain_arrays():
    p = Pools("x", ["a"], np.zeros((2, 3, 4, 4), np.uint8), np.zeros(2, np.int64))
    assert p.in_chans == 3 and p.image_size == 4


def test_positive_class_becomes_class_one_in_both_pools(tmp_path, monkeypatch):
    """coin/ sorts before other/; positive_class: coin makes coin class 1, labels remapped in train and test."""
    monkeypatch.setattr("trainables.folders.CACHE_DIR", tmp_path / "cache")
    make_image_tree(tmp_path / "t", {"coin": 4, "other": 6}, size=8, split="train")
    make_image_tree(tmp_path / "t", {"coin": 3, "other": 2}, size=8, split="test", seed=1)
    base = {**DATA, "dataset": "imagefolder", "root": str(tmp_path / "t")}
    sorted_order = load_pools(base)
    p = load_pools({**base, "positive_class": "coin"})
    assert sorted_order.classes == ["coin", "other"] and p.classes == ["other", "coin"]
    assert list(np.bincount(p.train_y)) == [6, 4] and list(np.bincount(p.test_y)) == [2, 3]
    assert np.array_equal(p.train_x, sorted_order.train_x) and np.array_equal(p.train_y, 1 - sorted_order.train_y)
    assert load_pools({**base, "positive_class": "other"}).classes == ["coin", "other"]  # already class 1
    with pytest.raises(DataError, match=r"data.positive_class: 'coins' is not a class; classes: coin, other"):
        load_pools({**base, "positive_class": "coins"})
    with pytest.raises(DataError, match="binary tasks only"):
        load_pools({**DATA, "positive_class": "3"})


class _Payload:
    """Unpickling this creates ``marker``: proof that a cache file ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (self.marker,)


def test_decode_cache_holds_arrays_only_and_a_replaced_file_is_never_run(tmp_path, monkeypatch):
    monkeypatch.setattr("trainables.folders.CACHE_DIR", tmp_path / "cache")
    make_image_tree(tmp_path / "t", {"a": 3, "b": 4}, size=8)
    data = {**DATA, "dataset": "imagefolder", "root": str(tmp_path / "t")}
    first = load_pools(data)
    (cache,) = (tmp_path / "cache" / "imagefolder").iterdir()
    with np.load(cache, allow_pickle=False) as f:  # plain arrays, readable without pickle
        assert np.array_equal(f["x"], first.train_x) and np.array_equal(f["y"], first.train_y)
    marker = tmp_path / "ran"
    for payload in (pickle.dumps(_Payload(str(marker))), pickle.dumps((first.train_x, first.train_y)), b"junk"):
        cache.write_bytes(payload)
        again = load_pools(data)
        assert not marker.exists()  # refused, not executed
        assert np.array_equal(again.train_x, first.train_x) and np.array_equal(again.train_y, first.train_y)
        with np.load(cache, allow_pickle=False) as f:  # decoded again and rewritten as arrays
            assert np.array_equal(f["x"], first.train_x)
    assert not list(cache.parent.glob("*.tmp*"))  # written atomically: no temp file left behind


def test_tests_use_a_cache_of_their_own():
    import os

    from trainables import folders as data  # CACHE_DIR's module

    assert os.environ["TUNE_CACHE_DIR"] == str(data.CACHE_DIR) and "tune-run-test-cache-" in str(data.CACHE_DIR)


def test_the_data_line_gives_the_splits_as_the_trials_use_them():
    """Digits has no test split: 20 % of it is held out as one, and the line says so, not "+ 0 test images"."""
    import trainables

    data = {**DATA, "dataset": "digits", "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}
    pools = load_pools(data)
    s = make_splits(pools, data)
    line = trainables.describe(pools, data)
    assert (
        f"{len(s.train):,} train + {len(s.val):,} val + {len(s.test):,} test images (held out of the train pool)"
        in line
    )
    assert len(s.train) + len(s.val) + len(s.test) == 1797 and len(s.test) == 359
