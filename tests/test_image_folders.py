"""Image folders as users hand them over: damaged files, odd image modes, stray files, bad trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_image_tree
from trainables.data import DataError
from trainables.datasets import load_pools

BIN = Path(sys.executable).parent


def data_for(root: Path, **extra) -> dict:
    return {"dataset": "imagefolder", "root": str(root), "image_size": 8, "split_seed": 0, **extra}


def break_files(folder: Path) -> list[str]:
    """A truncated PNG and a file of junk with an image name, in ``folder``; their paths."""
    good = next(folder.glob("*.png")).read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "junk.jpg").write_bytes(b"not an image at all" * 10)
    return sorted(str(folder / n) for n in ("junk.jpg", "truncated.png"))


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_unreadable_images_are_skipped_and_listed(tmp_path, storage):
    make_image_tree(tmp_path / "t", {"a": 3, "b": 3}, split="train")
    make_image_tree(tmp_path / "t", {"a": 2, "b": 2}, split="test")
    bad = break_files(tmp_path / "t" / "train" / "a") + break_files(tmp_path / "t" / "test" / "b")
    pools = load_pools(data_for(tmp_path / "t", storage=storage))
    assert sorted(pools.skipped) == sorted(bad) and pools.test_skipped == 2
    assert len(pools.train_x) == 6 and len(pools.test_x) == 4 and pools.streamed == (storage == "stream")
    assert pools.train_x[np.arange(6)].shape == (6, 3, 8, 8)  # every kept file decodes


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_a_truncated_jpeg_that_passes_verify_is_skipped(tmp_path, storage):
    """PIL's verify() reads a JPEG's headers only: a file cut short passes it and fails when decoded, which
    for a streamed set would be in a loader worker, mid-training."""
    from PIL import Image

    make_image_tree(tmp_path / "t", {"a": 3, "b": 3}, split="train")
    whole = tmp_path / "whole.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(whole)
    cut = tmp_path / "t" / "train" / "a" / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    with Image.open(cut) as im:
        im.verify()  # passes: the case this test is about
    pools = load_pools(data_for(tmp_path / "t", storage=storage))
    assert pools.skipped == [str(cut)] and len(pools.train_x) == 6
    assert pools.train_x[np.arange(6)].shape == (6, 3, 8, 8)  # every kept file decodes
    with pytest.raises(DataError, match="cut.jpg"):
        load_pools(data_for(tmp_path / "t", storage=storage, on_bad_image="error"))


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_on_bad_image_error_names_the_file(tmp_path, storage):
    make_image_tree(tmp_path / "t", {"a": 3, "b": 3})
    bad = break_files(tmp_path / "t" / "b")
    with pytest.raises(DataError, match=r"data.root: '.*(junk.jpg|truncated.png)' is not a readable image") as e:
        load_pools(data_for(tmp_path / "t", storage=storage, on_bad_image="error"))
    assert "2 such file(s)" in str(e.value) and any(b in str(e.value) for b in bad)


def test_skip_cache_keeps_the_skipped_list(tmp_path):
    make_image_tree(tmp_path / "t", {"a": 3, "b": 3})
    bad = break_files(tmp_path / "t" / "a")
    first, again = load_pools(data_for(tmp_path / "t")), load_pools(data_for(tmp_path / "t"))  # second from cache
    assert first.skipped == again.skipped == bad and np.array_equal(first.train_x, again.train_x)


def test_non_image_files_are_ignored(tmp_path):
    make_image_tree(tmp_path / "t", {"a": 2, "b": 2})
    for name in ("notes.txt", ".DS_Store", "Thumbs.db", "._0000.png"):
        (tmp_path / "t" / "a" / name).write_bytes(b"\x00\x05junk")
    (tmp_path / "t" / "README.txt").write_text("class folders below")
    pools = load_pools(data_for(tmp_path / "t"))
    assert len(pools.train_x) == 4 and pools.skipped == [] and pools.classes == ["a", "b"]


def test_image_modes_become_rgb_and_16_bit_is_scaled(tmp_path):
    root = tmp_path / "t"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 100, np.uint8), "L").save(root / "a" / "grey.png")
    Image.fromarray(np.full((8, 8, 4), 200, np.uint8), "RGBA").save(root / "a" / "rgba.png")
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(root / "a" / "cmyk.jpg")  # full magenta ink: no green
    Image.fromarray(np.full((8, 8, 3), 51, np.uint8)).convert("P").save(root / "b" / "palette.png")
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(root / "b" / "white16.png")
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(root / "b" / "mid16.png")
    assert Image.open(root / "b" / "white16.png").mode.startswith("I")  # really a 16-bit file
    pools = load_pools(data_for(root))
    assert pools.train_x.shape == (6, 3, 8, 8) and pools.skipped == []
    px = {
        Path(p).stem: pools.train_x[i, :, 0, 0].tolist()
        for i, p in enumerate(
            sorted([str(root / "a" / n) for n in ("cmyk.jpg", "grey.png", "rgba.png")])
            + sorted([str(root / "b" / n) for n in ("mid16.png", "palette.png", "white16.png")])
        )
    }
    assert px["grey"] == [100] * 3 and px["rgba"] == [200] * 3 and px["palette"] == [51] * 3
    assert px["white16"] == [255] * 3 and px["mid16"] == [128] * 3  # scaled, not clipped to 255
    assert px["cmyk"][0] > 200 and px["cmyk"][1] < 60


def test_exif_rotation_is_applied_and_small_images_are_resized_up(tmp_path):
    root = tmp_path / "t"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    img = np.zeros((4, 8, 3), np.uint8)
    img[:, :4] = 255  # white on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": white ends up on top
    Image.fromarray(img).save(root / "a" / "rotated.jpg", exif=exif.tobytes(), quality=100)
    Image.fromarray(np.full((2, 2, 3), 90, np.uint8)).save(root / "b" / "tiny.png")
    pools = load_pools(data_for(root, image_size=16))
    rotated, tiny = pools.train_x[0], pools.train_x[1]
    assert rotated[:, :4].mean() > 200 and rotated[:, -4:].mean() < 50  # top white, bottom black
    assert tiny.shape == (3, 16, 16) and (tiny == 90).all()


def test_final_metrics_count_the_skipped_test_images(tmp_path):
    import trainables
    from search import resolve
    from trainables.final import train_final

    make_image_tree(tmp_path / "t", {"a": 6, "b": 6}, split="train")
    make_image_tree(tmp_path / "t", {"a": 3, "b": 3}, split="test")
    broken = break_files(tmp_path / "t" / "test" / "a")
    spec = resolve(
        {
            "experiment": {"name": "f"},
            "data": data_for(tmp_path / "t"),
            "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
            "train": {"epochs": 1, "batch_size": 8, "device": "cpu"},
            "final": {"bootstrap": 0, "timing_s": 0.2},
        },
        trainables,
    )
    train_final(spec, trainables.prepare(spec), 0, tmp_path / "0")
    test = json.loads((tmp_path / "0" / "metrics.json").read_text())["test"]
    assert test["skipped_images"] == 2 and sum(map(sum, test["confusion_matrix"])) == 6
    # tune-eval counts them too, and names them.
    r = subprocess.run([str(BIN / "tune-eval"), str(tmp_path / "0")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["skipped_images"] == 2 and sorted(out["skipped_first"]) == sorted(broken)


# --------------------------------------------------------------------------- through the console script


def write_spec(tmp_path: Path, root: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        f"data: {{dataset: imagefolder, root: {root}, image_size: 8}}\n"
        f"model: {{name: cnn}}\nexperiment: {{output_dir: {tmp_path / 'runs'}}}\n"
    )


def tune_run(tmp_path: Path, root: Path, *args: str, cli=None):  # noqa: ANN001, ANN201
    """``tune-run s.yaml ARGS`` on an image folder: in this process through ``cli`` (bad input, --dry-run),
    else as the console script."""
    write_spec(tmp_path, root)
    if cli is not None:
        return cli("tune-run", "s.yaml", *args, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [str(BIN / "tune-run"), "s.yaml", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


def one_line_error(r, tmp_path: Path, *words: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tune-run: error: s.yaml: data.root: "), r.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "runs").exists()  # nothing written


def test_dry_run_reports_class_counts_per_split(tmp_path, cli):
    make_image_tree(tmp_path / "t", {"cat": 3, "dog": 2}, split="train")
    make_image_tree(tmp_path / "t", {"cat": 1, "dog": 2}, split="test")
    r = tune_run(tmp_path, tmp_path / "t", "--dry-run", cli=cli)
    assert r.returncode == 0, r.stderr
    data = [line for line in r.stdout.splitlines() if line.startswith("# data: ")]
    assert len(data) == 2 and "train" in data[0] and "5 images, 2 classes: cat 3, dog 2" in data[0]
    assert "test" in data[1] and "3 images, 2 classes: cat 1, dog 2" in data[1]


@pytest.mark.parametrize("case", ["missing", "empty_class", "one_class", "classes_differ"])
def test_dry_run_refuses_a_tree_that_cannot_train(tmp_path, case, cli):
    root = tmp_path / "t"
    words: tuple[str, ...]
    if case == "missing":
        words = (f"{str(root)!r} is not a folder",)
    elif case == "empty_class":
        make_image_tree(root, {"a": 2, "b": 2})
        (root / "empty").mkdir()
        (root / "empty" / "notes.txt").write_text("no images here")
        words = (f"class folder {str(root / 'empty')!r} has no images",)
    elif case == "one_class":
        make_image_tree(root, {"only": 3})
        words = ("has 1 class folder (only)", "at least 2 classes")
    else:
        make_image_tree(root, {"cat": 2, "dog": 2}, split="train")
        make_image_tree(root, {"cat": 2, "cow": 2}, split="test")
        words = ("test/ classes ['cat', 'cow'] differ from train/ classes ['cat', 'dog']",)
    one_line_error(tune_run(tmp_path, root, "--dry-run", cli=cli), tmp_path, *words)


def test_on_bad_image_error_stops_the_study_with_one_line(tmp_path, cli):
    make_image_tree(tmp_path / "t", {"a": 3, "b": 3})
    break_files(tmp_path / "t" / "b")
    r = tune_run(tmp_path, tmp_path / "t", "--set", "data.on_bad_image=error", cli=cli)
    one_line_error(r, tmp_path, "is not a readable image", "junk.jpg")
    assert "Ray dashboard" not in r.stdout


def test_val_auc_on_a_multi_class_folder_stops_before_the_study(tmp_path, cli):
    """An image folder's classes are counted when it is loaded: val_auc (binary only) is refused then."""
    make_image_tree(tmp_path / "t", {"a": 3, "b": 3, "c": 3})
    r = tune_run(tmp_path, tmp_path / "t", "--set", "experiment.metric=val_auc", cli=cli)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == (
        "tune-run: error: s.yaml: experiment.metric: val_auc needs a binary task (2 classes), "
        "got 3 classes; for more classes use val_f1_macro, val_mcc or val_balanced_acc "
        "(imagefolder)"
    )
    assert not (tmp_path / "runs").exists() and "Ray dashboard" not in r.stdout


@pytest.mark.ray
def test_study_skips_a_corrupt_image_and_lists_it(tmp_path, cli, ray_session):
    make_image_tree(tmp_path / "t", {"a": 8, "b": 8})
    bad = break_files(tmp_path / "t" / "a")[1:]  # the truncated PNG only
    (tmp_path / "t" / "a" / "junk.jpg").unlink()
    r = tune_run(
        tmp_path,
        tmp_path / "t",
        "--set",
        "experiment.name=skip",
        "--set",
        "train.epochs=1",
        "--set",
        "search.num_samples=2",
        "--set",
        "final.after_search=false",
        "--set",
        "train.batch_size=8",
        "--set",
        "resources.cpu=1",
        cli=cli,
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    data = next(line for line in r.stdout.splitlines() if line.startswith("data: "))
    assert "skipped 1 unreadable image(s) (0 test): " + bad[0] in data
    out = tmp_path / "runs" / "skip"
    assert (out / "skipped_images.txt").read_text().splitlines() == bad
    study = json.loads((out / "study.json").read_text())
    assert study["skipped_images"] == {"count": 1, "first": bad, "all_in": "skipped_images.txt"}
    assert study["trials"] == 2
