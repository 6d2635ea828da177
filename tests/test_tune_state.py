"""Tune's record of a study resumes from one checkpoint after a driver killed between the uploads of its files."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import trainables
from search import resolve
from search.run._resume import check_resumable
from search.run._tune_state import PairedSearch, PairedVariants
from search.store._tune_snapshot import restore_snapshot
from tests.servers import BUCKET

SESSION = "2026-12-05_01-21-18"
LATER = "2026-12-05_02-00-00"  # a resumed run's session
STATE = f"experiment_state-{SESSION}.json"
SEARCHER = f"basic-variant-state-{SESSION}.json"
SNAPSHOT = f"study-state-{SESSION}.json"


def grid() -> PairedVariants:
    from ray import tune

    tune.register_trainable("f", lambda config: None)
    gen = PairedVariants(random_state=0, max_concurrent=2)
    gen.add_configurations({"e": {"run": "f", "config": {"lr": tune.grid_search([1, 2, 3])}, "num_samples": 1}})
    return gen


def checkpoint(gen, staging: Path, trials: list, session: str = SESSION) -> None:
    """What Tune's TuneController.save_to_dir does: the trial list, then the searcher (by keyword)."""
    (staging / f"experiment_state-{session}.json").write_text(json.dumps({"trial_data": [t.trial_id for t in trials]}))
    gen.save_to_dir(str(staging), session_str=session)


def started(tmp_path: Path) -> tuple[PairedVariants, list, Path, Path]:
    """A grid of three, two trials running; its first checkpoint uploaded whole."""
    staging, storage = tmp_path / "staging", tmp_path / "storage"
    staging.mkdir()
    gen = grid()
    trials = [gen.next_trial(), gen.next_trial()]
    assert gen.next_trial() is None  # two at a time
    checkpoint(gen, staging, trials)
    shutil.copytree(staging, storage)
    return gen, trials, staging, storage


def test_a_searcher_uploaded_ahead_of_the_trial_list_is_put_back_and_no_grid_point_is_lost(tmp_path):
    """Storage got the searcher of a checkpoint after a trial ended (it had handed out the third grid point) but
    not that checkpoint's trial list (two trials): the snapshot of the earlier checkpoint is put back, and the
    restored searcher hands out the third point once the running trials end."""
    from ray.tune.search import BasicVariantGenerator

    gen, trials, staging, storage = started(tmp_path)
    assert json.loads((storage / SNAPSHOT).read_text())["files"].keys() == {STATE, SEARCHER}
    gen.on_trial_complete(trials[0].trial_id)
    trials.append(gen.next_trial())  # the third point
    checkpoint(gen, staging, trials)
    shutil.copy(staging / SEARCHER, storage / SEARCHER)  # the driver was killed after this upload

    assert restore_snapshot(str(storage)) == [SEARCHER]
    restored = BasicVariantGenerator()
    restored.restore_from_dir(str(storage))
    restored.on_trial_complete(trials[0].trial_id)
    third = restored.next_trial()
    assert third is not None and third.config == {"lr": 3} and third.trial_id == trials[2].trial_id
    assert restore_snapshot(str(storage)) == []  # whole now


def test_a_snapshot_uploaded_before_its_trial_list_brings_the_list_forward(tmp_path):
    gen, trials, staging, storage = started(tmp_path)
    gen.on_trial_complete(trials[0].trial_id)
    trials.append(gen.next_trial())
    checkpoint(gen, staging, trials)
    shutil.copy(staging / SNAPSHOT, storage / SNAPSHOT)  # killed before the trial list and searcher went up
    assert sorted(restore_snapshot(str(storage))) == [SEARCHER, STATE]
    assert json.loads((storage / STATE).read_text())["trial_data"] == [t.trial_id for t in trials]


def test_a_later_runs_files_without_their_snapshot_are_removed_and_a_cut_snapshot_is_not_used(tmp_path):
    """A resumed run (a later session) killed after uploading its searcher, before its trial list or snapshot:
    Tune would restore the newest searcher against the older list, so those files go. A snapshot cut short (a
    file system that writes in place) is passed over for the newest whole one."""
    gen, trials, staging, storage = started(tmp_path)
    (storage / f"basic-variant-state-{LATER}.json").write_bytes(b"ahead")
    (storage / f"study-state-{LATER}.json").write_text('{"files": {"experiment_state-')
    assert restore_snapshot(str(storage)) == [f"basic-variant-state-{LATER}.json"]
    assert sorted(p.name for p in storage.iterdir()) == sorted([STATE, SEARCHER, SNAPSHOT, f"study-state-{LATER}.json"])


def test_a_model_based_searchers_checkpoint_is_snapshot_whole(tmp_path):
    """Optuna under a ConcurrencyLimiter, as Tune runs it: the snapshot holds both of its files."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    search = PairedSearch(ConcurrencyLimiter(OptunaSearch(metric="acc", mode="max"), max_concurrent=2))
    (tmp_path / STATE).write_text("{}")
    search.save_to_dir(str(tmp_path), session_str=SESSION)
    files = json.loads((tmp_path / SNAPSHOT).read_text())["files"]
    assert files.keys() == {STATE, f"search_gen_state-{SESSION}.json", f"searcher-state-{SESSION}.pkl"}
    assert (
        base64.b64decode(files[f"searcher-state-{SESSION}.pkl"])
        == (tmp_path / f"searcher-state-{SESSION}.pkl").read_bytes()
    )


def test_a_trial_list_cut_short_resumes_from_its_snapshot(tmp_path):
    """--resume checks Tune's trial list is whole after putting the snapshot back, not before: one cut short
    where a whole snapshot holds it resumes."""
    spec = resolve(
        {"experiment": {"name": "s"}, "data": {"dataset": "digits"}, "model": {"name": "cnn"}, "train": {"epochs": 1}},
        trainables,
    )
    _, _, _, storage = started(tmp_path)
    (storage / "study.json").write_text(json.dumps({"spec": spec, "spec_given": spec}, default=str))
    whole = (storage / STATE).read_text()
    (storage / STATE).write_text(whole[:10])
    said: list[str] = []
    check_resumable("spec.yaml", str(storage / "study.json"), spec, said.append)
    assert (storage / STATE).read_text() == whole
    assert said == [
        f"resume: Ray Tune's state is its last whole checkpoint's (the run was stopped while uploading a later "
        f"one): {STATE}"
    ]


def test_a_study_without_snapshots_is_left_as_it_is(tmp_path):
    """A study written before snapshots: nothing to put back from."""
    (tmp_path / STATE).write_text("{}")
    (tmp_path / f"basic-variant-state-{LATER}.json").write_text("{}")
    assert restore_snapshot(str(tmp_path)) == []
    assert len(list(tmp_path.iterdir())) == 2
    assert restore_snapshot(str(tmp_path / "missing")) == []


def test_the_snapshot_is_put_back_in_s3(s3, monkeypatch):
    """In object storage too: the study's folder is an S3 prefix."""
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    client, folder = s3.client(), "runs/snapshot"
    files = {STATE: b'{"trial_data": []}', SEARCHER: b"old"}
    snap = {"files": {k: base64.b64encode(v).decode() for k, v in files.items()}}
    client.put_object(Bucket=BUCKET, Key=f"{folder}/{STATE}", Body=files[STATE])
    client.put_object(Bucket=BUCKET, Key=f"{folder}/{SEARCHER}", Body=b"newer")
    client.put_object(Bucket=BUCKET, Key=f"{folder}/basic-variant-state-{LATER}.json", Body=b"later")
    client.put_object(Bucket=BUCKET, Key=f"{folder}/{SNAPSHOT}", Body=json.dumps(snap).encode())
    assert restore_snapshot(f"s3://{BUCKET}/{folder}") == [f"basic-variant-state-{LATER}.json", SEARCHER]
    assert client.get_object(Bucket=BUCKET, Key=f"{folder}/{SEARCHER}")["Body"].read() == b"old"
    assert s3.keys(f"{folder}/basic-variant-state-") == [f"{folder}/{SEARCHER}"]
