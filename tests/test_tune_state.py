"""Tune's record of a study resumes from one checkpoint after a driver killed between the uploads of its files."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from ray.tune.search import BasicVariantGenerator

from search.run._tune_state import PairedVariants, restore_snapshot
from tests.servers import BUCKET

SESSION = "2026-12-05_01-21-18"
STATE = f"experiment_state-{SESSION}.json"
SEARCHER = f"basic-variant-state-{SESSION}.json"


def grid(tmp: Path) -> PairedVariants:
    from ray import tune

    tune.register_trainable("f", lambda config: None)
    gen = PairedVariants(random_state=0, max_concurrent=2)
    gen.add_configurations({"e": {"run": "f", "config": {"lr": tune.grid_search([1, 2, 3])}, "num_samples": 1}})
    return gen


def checkpoint(gen: PairedVariants, staging: Path, trials: list) -> None:
    """What Tune's TuneController.save_to_dir does: the trial list, then the searcher."""
    (staging / STATE).write_text(json.dumps({"trial_data": [t.trial_id for t in trials]}))
    gen.save_to_dir(str(staging), session_str=SESSION)


def test_a_searcher_uploaded_ahead_of_the_trial_list_is_put_back_and_no_grid_point_is_lost(tmp_path):
    """Storage got the searcher of a checkpoint after a trial ended (it had handed out the third grid point) but
    not that checkpoint's trial list (two trials): the snapshot of the earlier checkpoint is put back, and the
    restored searcher hands out the third point once the running trials end."""
    staging, storage = tmp_path / "staging", tmp_path / "storage"
    staging.mkdir()
    gen = grid(tmp_path)
    trials = [gen.next_trial(), gen.next_trial()]
    assert gen.next_trial() is None  # two at a time
    checkpoint(gen, staging, trials)
    shutil.copytree(staging, storage)  # uploaded whole
    assert json.loads((storage / f"study-state-{SESSION}.json").read_text())["files"].keys() == {STATE, SEARCHER}

    gen.on_trial_complete(trials[0].trial_id)
    trials.append(gen.next_trial())  # the third point
    checkpoint(gen, staging, trials)
    shutil.copy(staging / SEARCHER, storage / SEARCHER)  # the driver was killed after this upload

    assert restore_snapshot(str(storage)) == [SEARCHER]
    assert (storage / SEARCHER).read_bytes() != (staging / SEARCHER).read_bytes()
    restored = BasicVariantGenerator()
    restored.restore_from_dir(str(storage))
    restored.on_trial_complete(trials[0].trial_id)
    third = restored.next_trial()
    assert third is not None and third.config == {"lr": 3} and third.trial_id == trials[2].trial_id
    assert restore_snapshot(str(storage)) == []  # whole now


def test_a_trial_list_without_its_sessions_snapshot_is_left_as_it_is(tmp_path):
    """A study written before snapshots, or a resumed run killed before its first checkpoint: nothing to put back
    from (an older session's snapshot does not describe the newest trial list)."""
    (tmp_path / STATE).write_text("{}")
    (tmp_path / "study-state-2026-12-04_00-00-00.json").write_text(json.dumps({"files": {STATE: ""}}))
    assert restore_snapshot(str(tmp_path)) == []
    assert (tmp_path / STATE).read_text() == "{}"
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
    client.put_object(Bucket=BUCKET, Key=f"{folder}/study-state-{SESSION}.json", Body=json.dumps(snap).encode())
    assert restore_snapshot(f"s3://{BUCKET}/{folder}") == [SEARCHER]
    assert client.get_object(Bucket=BUCKET, Key=f"{folder}/{SEARCHER}")["Body"].read() == b"old"
