"""Tests of yolo_nonlocal.cli.yolov5: ``yolo-nonlocal yolov5 patch|unpatch|status`` on the shared key=value grammar.

In-process through ``yolo_nonlocal.cli.main``; one subprocess smoke test of the console script, and the
closed-pipe test, which needs a real file descriptor.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from yolov5_trees import CLI, cli, run_cli, snapshot, write_tree

from yolo_nonlocal.integrations.yolov5 import STATE_DIR, YOLO_PY


@pytest.mark.parametrize("form", [["yolov5", "patch"], ["patch"]])  # the noun group and the old top-level alias
def test_patch_forms_are_equivalent(tmp_path, capsys, form):
    root = write_tree(tmp_path / "clone", "yolov5-star")
    yolo = root / YOLO_PY  # with IDetect, so that flavour=yolov7 copies the YOLOv7 YAMLs
    yolo.write_text(yolo.read_text().replace("\n\ndef make_divisible", "\n\nclass IDetect:\n    pass\n\n\ndef make_divisible"))
    before = snapshot(root)
    for args, legacy in ((["dry_run=True", f"path={root}"], False), ([str(root), "dry_run=yes"], False),
                         ([str(root), "--dry-run"], True), (["--dry-run", f"path={root}"], True)):
        rc, out, err = cli(capsys, *form, *args)
        assert rc == 0, err
        assert out.startswith("diff --git a/models/yolo.py b/models/yolo.py\n") and "dry run" in err
        assert ("--dry-run is the old form of dry_run=True" in err) == legacy
    assert snapshot(root) == before
    rc, out, err = cli(capsys, *form, str(root), "flavour=yolov7", "dry_run=True")
    assert rc == 0 and "+++ b/cfg/training/yolov7-nl.yaml" in out
    for old in (["--flavour", "yolov7"], ["--flavor=yolov7"]):
        rc, out, err = cli(capsys, *form, str(root), "--dry-run", *old)
        assert rc == 0 and "+++ b/cfg/training/yolov7-nl.yaml" in out and "old form of flavour=" in err
    assert snapshot(root) == before


def test_unpatch_and_status_forms(tmp_path, capsys):
    root = write_tree(tmp_path / "clone", "yolov5-star")
    rc, out, err = cli(capsys, "yolov5", "patch", f"path={root}")
    assert rc == 0 and "undo: yolo-nonlocal yolov5 unpatch path=" in out
    rc, out, err = cli(capsys, "yolov5", "status", f"path={root}")
    assert rc == 0 and "unchanged since" in out
    rc, out, err = cli(capsys, "yolov5", "unpatch", str(root), "keep_edited=True")
    assert rc == 0 and "restored models/yolo.py" in out and not (root / STATE_DIR).exists()


def test_current_folder_is_the_default_path(tmp_path, capsys, monkeypatch):
    root = write_tree(tmp_path / "clone", "yolov5-star")
    monkeypatch.chdir(root)
    rc, out, err = cli(capsys, "yolov5", "status")
    assert rc == 0 and f"{root}: YOLOv5 tree" in out


@pytest.mark.parametrize("args, message", [
    (["yolov5"], "expected one of patch, unpatch, status after 'yolov5'"),
    (["yolov5", "pach"], "expected one of patch, unpatch, status after 'yolov5', got 'pach'"),
    (["yolov5", "patch", "dryrun=True"], "unknown argument 'dryrun'; did you mean dry_run="),
    (["yolov5", "patch", "dry_run=maybe"], "dry_run='maybe' is not a boolean"),
    (["yolov5", "patch", "path=a", "path=b"], "argument 'path' is given twice"),
    (["yolov5", "patch", "a", "b"], "argument 'b' is not key=value"),
    (["yolov5", "unpatch", "--dry-run"], "unknown flag '--dry-run'"),
    (["yolov5", "status", "keep_edited=True"], "unknown argument 'keep_edited'"),
    (["yolov5", "patch", "flavour=yolov8"], "flavour='yolov8' is not one of: yolov5, yolov7"),
    (["yolov5", "status", "path=/nonexistent/clone"], "/nonexistent/clone is not a folder"),
])
def test_errors_have_one_prefix_and_exit_2(capsys, args, message):
    rc, out, err = cli(capsys, *args)
    assert rc == 2, (out, err)
    prefix = "yolo-nonlocal yolov5" + (f" {args[1]}" if len(args) > 2 else "") + ": error: "
    assert err.startswith(prefix) and message in err, err
    assert "Traceback" not in err


def test_help(capsys):
    rc, out, err = cli(capsys, "yolov5", "--help")
    assert rc == 0 and "usage: yolo-nonlocal yolov5 {patch|unpatch|status}" in out
    for verb, key in (("patch", "dry_run"), ("unpatch", "keep_edited"), ("status", "path")):
        rc, out, err = cli(capsys, "yolov5", verb, "--help")
        assert rc == 0 and f"usage: yolo-nonlocal yolov5 {verb}" in out and key in out
        rc, out, err = cli(capsys, verb, "--help")  # the old top-level alias
        assert rc == 0 and f"usage: yolo-nonlocal yolov5 {verb}" in out


def test_console_script_smoke(tmp_path):
    root = write_tree(tmp_path / "clone", "yolov7")
    before = snapshot(root)
    for args in (["yolov5", "patch", f"path={root}"], ["yolov5", "status", str(root)], ["unpatch", str(root)]):
        out = run_cli(*args)
        assert out.returncode == 0, out.stderr
    assert snapshot(root) == before


def test_a_closed_pipe_ends_quietly(tmp_path):
    """Issue 14.8: `yolo-nonlocal patch TREE --dry-run | head` ended with a BrokenPipeError traceback."""
    root = write_tree(tmp_path / "clone", "yolov5-star")
    for args in (["patch", str(root), "--dry-run"], ["yolov5", "status", str(root)]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the first byte: every write raises EPIPE
        try:
            out = subprocess.run([CLI, *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
        finally:
            os.close(write)
        assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr, out.stderr
        assert out.returncode == 0
    assert not (root / STATE_DIR).exists() and (root / YOLO_PY).is_file()
