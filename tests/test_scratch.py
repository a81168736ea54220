"""Scratch folders carry their run's pid; a later run removes those of dead runs only (``edgec.scratch``)."""

import os
import subprocess

from edgec.artifact import staging_dir
from edgec.scratch import mkdtemp, sweep


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_sweep_removes_dead_runs_folders_and_nothing_else(tmp_path):
    dead = tmp_path / f"edgec-run-{_dead_pid()}-abcd_123"
    (dead / "inner").mkdir(parents=True)
    live = tmp_path / f"edgec-run-{os.getppid()}-abcd_123"
    mine = tmp_path / f"edgec-run-{os.getpid()}-abcd_123"
    untagged = tmp_path / "edgec-run-notapid"
    other = tmp_path / f"edgec-verify-{_dead_pid()}-abcd_123"
    a_file = tmp_path / f"edgec-run-{_dead_pid()}-abcdefgh"
    for p in (live, mine, untagged, other):
        p.mkdir()
    a_file.write_text("x")
    assert sweep(tmp_path, "edgec-run-") == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, mine, untagged, other, a_file))


def test_mkdtemp_names_the_owner_and_sweeps_its_prefix(tmp_path):
    dead = tmp_path / f"edgec-x-{_dead_pid()}-abcdefgh"
    dead.mkdir()
    made = mkdtemp("edgec-x-", tmp_path)
    assert made.name.startswith(f"edgec-x-{os.getpid()}-") and made.is_dir()
    assert not dead.exists()


def test_a_build_removes_the_staging_folder_a_killed_build_of_the_same_name_left(tmp_path):
    leftover = tmp_path / f".m.tmp-{_dead_pid()}-abcdefgh"
    (leftover / "lib").mkdir(parents=True)
    other_name = tmp_path / f".n.tmp-{_dead_pid()}-abcdefgh"
    other_name.mkdir()
    with staging_dir(tmp_path / "m") as tmp:
        (tmp / "manifest.json").write_text("{}")
        assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m", other_name.name])
