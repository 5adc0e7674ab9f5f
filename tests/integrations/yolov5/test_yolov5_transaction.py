"""Tests of yolo_nonlocal.integrations.yolov5.transaction: all or nothing, on every failure path.

Failures are provoked for real where the machine allows it: a small tmpfs (mounted when running as root,
skipped otherwise) for a full disk, a tree chowned to another uid for ownership, a read-only file, a folder
where a file goes; and by a rename that fails midway (monkeypatched os.replace) for the rollback itself.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from yolov5_trees import snapshot, tree_dirs, write_tree

from yolo_nonlocal.integrations.yolov5 import (
    STATE_DIR,
    YOLO_PY,
    PatchError,
    patch,
    unpatch,
)
from yolo_nonlocal.integrations.yolov5.transaction import (
    KEEP_SUFFIX,
    TEMP_SUFFIX,
    Transaction,
)


def leftovers(root: Path) -> list[str]:
    """Temporary and kept-original files of a transaction that are still in the tree."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.name.endswith((TEMP_SUFFIX, KEEP_SUFFIX)))


def meta(path: Path) -> tuple[int, int, int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime_ns


def test_read_only_file_fails_atomically(tmp_path):
    root = write_tree(tmp_path / "clone", "yolov5-star")
    yolo = root / YOLO_PY
    yolo.chmod(0o444)
    try:
        before, dirs = snapshot(root), tree_dirs(root)
        with pytest.raises(PatchError, match=r"models/yolo\.py is read-only .*chmod u\+w"):
            patch(root)
        assert snapshot(root) == before and tree_dirs(root) == dirs
        assert stat.S_IMODE(yolo.stat().st_mode) == 0o444
    finally:
        yolo.chmod(0o644)


def test_failure_midway_puts_every_file_back(tmp_path, monkeypatch):
    """A rename that fails after others succeeded: the renamed files are restored, the new ones removed."""
    root = write_tree(tmp_path / "clone", "yolov5-star")
    before, dirs = snapshot(root), tree_dirs(root)
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 4:
            raise OSError(28, "No space left on device", dst)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(PatchError, match="No space left on device.*put back"):
        patch(root)
    monkeypatch.setattr(os, "replace", real)
    assert len(calls) > 4  # the rollback ran (it renames the originals back)
    assert snapshot(root) == before and tree_dirs(root) == dirs
    assert not leftovers(root)


def test_rollback_restores_the_very_same_file_mode_owner_and_times(tmp_path, monkeypatch):
    """Issue 14.2: a rollback left models/yolo.py at mode 0600 (a rewritten temporary) where it was 0644."""
    root = write_tree(tmp_path / "clone", "yolov5-star")
    yolo = root / YOLO_PY
    yolo.chmod(0o664)
    os.utime(yolo, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    original = meta(yolo)
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # models/yolo.py and its backup are in place, the first YAML fails
            raise OSError(errno.EIO, "Input/output error", dst)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(PatchError, match="every file was put back"):
        patch(root)
    monkeypatch.setattr(os, "replace", real)
    assert meta(yolo) == original  # inode, owner, group, mode and mtime: the original file itself
    assert not leftovers(root) and not (root / STATE_DIR).exists()


def test_rollback_without_hard_links_restores_content_mode_and_times(tmp_path, monkeypatch):
    """Where hard links are refused (EPERM on some file systems), the original comes back from memory."""
    root = write_tree(tmp_path / "clone", "yolov5-star")
    yolo = root / YOLO_PY
    yolo.chmod(0o664)
    os.utime(yolo, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before, original = snapshot(root), meta(yolo)

    def no_link(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.EIO, "Input/output error", dst)
        return real(src, dst)

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(PatchError, match="every file was put back"):
        patch(root)
    monkeypatch.setattr(os, "replace", real)
    assert snapshot(root) == before and meta(yolo)[1:] == original[1:]  # a new inode, all else the same
    assert not leftovers(root)


def test_a_failed_temporary_write_leaves_no_file_behind(tmp_path, monkeypatch):
    """Issue 14.1: a temporary file was registered for clean-up only after its write succeeded."""
    root = write_tree(tmp_path / "clone", "yolov5-star")
    before, dirs = snapshot(root), tree_dirs(root)
    real_fdopen = os.fdopen
    opened = []

    class FullDisk:
        """The second temporary file (the backup, in a folder the transaction made) hits a full disk."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        opened.append(fd)
        return FullDisk(f) if len(opened) == 2 else f

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(PatchError, match="No space left on device"):
        patch(root)
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert len(opened) >= 2
    assert not leftovers(root)
    assert snapshot(root) == before and tree_dirs(root) == dirs


def test_a_folder_where_the_backup_goes_is_refused_before_writing(tmp_path):
    root = write_tree(tmp_path / "clone", "yolov5-star")
    yolo = root / YOLO_PY
    (root / STATE_DIR / "backup" / YOLO_PY).mkdir(parents=True)
    before, dirs, original = snapshot(root), tree_dirs(root), meta(yolo)
    with pytest.raises(PatchError, match=r"nothing was changed: \.yolo-nonlocal/backup/models/yolo\.py is a folder"):
        patch(root)
    assert snapshot(root) == before and tree_dirs(root) == dirs and meta(yolo) == original
    assert not leftovers(root)


def test_a_file_where_a_folder_goes_is_refused_before_writing(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    (root / "cfg").write_text("not a folder\n")
    tx = Transaction(root)
    tx.write(root / "cfg" / "training" / "x.yaml", b"x: 1\n")
    with pytest.raises(PatchError, match="cfg is a file where a folder should be"):
        tx.commit()
    assert sorted(p.name for p in root.iterdir()) == ["cfg"]


# --------------------------------------------------------------------------------------------- real file systems


@pytest.fixture
def small_fs(tmp_path):
    """A 256 KiB tmpfs (root only); yields its mount point, unmounts afterwards."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_at_every_point_leaves_the_tree_as_it_was(small_fs):
    """Issue 14.1, on a real full file system: fill it to each page count, patch, check nothing is left."""
    root = write_tree(small_fs / "clone", "yolov5-star")
    before, dirs = snapshot(root), tree_dirs(root)
    filler = small_fs / "filler"
    page = 4096
    outcomes = []
    for free_pages in range(24):
        filler.unlink(missing_ok=True)
        free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
        with open(filler, "wb") as f:  # leave free_pages pages free
            try:
                f.write(b"\0" * max(0, free - free_pages * page))
            except OSError:
                pass
        try:
            patch(root)
        except PatchError as e:
            assert "No space left on device" in str(e) and "nothing was changed" in str(e), str(e)
            outcomes.append("refused")
            assert not leftovers(root), (free_pages, leftovers(root))
            assert snapshot(root) == before and tree_dirs(root) == dirs, free_pages
            continue
        outcomes.append("patched")
        assert not leftovers(root)
        filler.unlink()
        unpatch(root)
        assert snapshot(root) == before and tree_dirs(root) == dirs
    assert "refused" in outcomes and outcomes[-1] == "patched"  # both paths were taken


@pytest.fixture
def reachable_dir():
    """A fresh folder that uid 1000 can reach (pytest's tmp_path lies under a root-only folder)."""
    base = Path(tempfile.mkdtemp(prefix="yolo-nonlocal-owner-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another uid needs root")
def test_files_keep_the_trees_owner_when_patching_as_root(reachable_dir):
    """Issue 14.2: patching as root a tree owned by uid 1000 left root-owned files the owner could not unpatch."""
    root = write_tree(reachable_dir / "clone", "yolov7")
    shutil.rmtree(root / "cfg" / "training")  # so that the patch creates a folder, too
    for p in [root, *root.rglob("*")]:
        os.chown(p, 1000, 1000)
    (root / YOLO_PY).chmod(0o640)
    patch(root)
    owners = {p.relative_to(root).as_posix(): (p.stat().st_uid, p.stat().st_gid) for p in root.rglob("*")}
    assert set(owners.values()) == {(1000, 1000)}, {k: v for k, v in owners.items() if v != (1000, 1000)}
    assert "cfg/training/yolov7-nl.yaml" in owners and f"{STATE_DIR}/backup/models" in owners
    assert stat.S_IMODE((root / YOLO_PY).stat().st_mode) == 0o640
    # the owner can undo it without root (everything imported before dropping root: the interpreter may live
    # where uid 1000 cannot read)
    code = ("import os, sys, yaml, yolo_nonlocal.integrations.yolov5.api as api; os.setgid(1000); os.setuid(1000); "
            "api.unpatch(sys.argv[1])")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert not (root / STATE_DIR).exists()
    assert ((root / YOLO_PY).stat().st_uid, (root / YOLO_PY).stat().st_gid) == (1000, 1000)
    assert stat.S_IMODE((root / YOLO_PY).stat().st_mode) == 0o640

