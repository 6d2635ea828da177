"""Damaged input files through tune-run's ``main``: exit status 2, one line naming the file, nothing written.
(test_spec runs the console script on a bad spec: the same path, as a process.)"""

from __future__ import annotations

import pytest

BOMB = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n".encode() for p, c in zip("abcdefg", "bcdefgh")
)

# (file name, bytes or None for a directory, words the one line must hold)
CASES = [
    ("latin1.yaml", "data: {dataset: caf\xe9}\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9 at offset 19)"),
    ("binary.yaml", bytes(range(256)) * 4, "is a binary file, not a spec file"),
    ("deep.yaml", b"data: " + b"[" * 5000 + b"]" * 5000, "is nested more than 64 levels deep"),
    ("bomb.yaml", BOMB, "alias bomb"),
    ("self.yaml", b"data: &a [*a]\n", "an alias refers to itself"),
    (
        "pytag.yaml",
        b"data: !!python/object/apply:os.system ['touch pwned']\nmodel: {name: cnn}\n",
        "python/object/apply:os.system' is not allowed",
    ),
    ("empty.yaml", b"", "is empty; a spec is a mapping of sections"),
    ("list.yaml", b"- data\n- model\n", "expected a mapping of sections"),
    ("scalar.yaml", b"quickstart\n", "expected a mapping of sections"),
    ("broken.yaml", b"data: {dataset: digits\nmodel: [", "line 2: invalid YAML"),
    ("folder.yaml", None, "is a directory, not a spec file"),
    ("missing.yaml", "absent", "no such spec file"),
]


@pytest.mark.parametrize("name,content,words", CASES, ids=[c[0] for c in CASES])
def test_damaged_spec_file_is_one_line_and_exit_2(tmp_path, cli, name, content, words):
    if content is None:
        (tmp_path / name).mkdir()
    elif isinstance(content, bytes):
        (tmp_path / name).write_bytes(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("tune-run", name, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"tune-run: error: {name}: ") and words in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written (no pwned, no runs/)


def test_unreachable_tracking_server_is_refused_before_ray_starts(tmp_path, cli):
    import time

    (tmp_path / "s.yaml").write_text("data: {dataset: digits}\nmodel: {name: cnn}\n")
    t0 = time.monotonic()
    r = cli("tune-run", "s.yaml", "--set", "tracking.mlflow_uri=http://127.0.0.1:9", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith(
        "tune-run: error: s.yaml: tracking.mlflow_uri: http://127.0.0.1:9 cannot be reached"
    )
    assert "Ray dashboard" not in r.stdout and time.monotonic() - t0 < 120  # it used to hang in MLflow's retries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
