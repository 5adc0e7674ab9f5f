"""All-or-nothing writes of a few files in a tree: either every file changes, or none does.

The patcher writes ``models/yolo.py``, its backup, the copied YAMLs and a manifest; unpatching writes one
file back and deletes the rest. A :class:`Transaction` collects those operations, then :meth:`commit`:

1. checks first what can be checked without writing (read-only files, folders where a file should go,
   folders it may not write in), and refuses with one message listing every problem;
2. writes each new content to a temporary file beside its target, with the target's owner, group and mode
   (a new file takes the owner and group of its folder, so a tree owned by another user, such as a clone
   mounted into a container that runs as root, stays that user's), and keeps a hard link to every file it
   will replace or delete;
3. renames the temporaries into place (``os.replace``, atomic per file);
4. on any failure, renames the kept originals back (the very same files: content, owner, mode and times),
   removes the files it created, every temporary file and every folder it made; the message says that
   nothing changed, or names a file it could not put back and where its original is.

Every temporary file is registered for clean-up before its first byte is written, so a full disk leaves
nothing behind either.
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from yolo_nonlocal.integrations.yolov5.tree import PatchError, rel

__all__ = ["KEEP_SUFFIX", "TEMP_SUFFIX", "Transaction", "read_only"]

TEMP_SUFFIX = ".yolo-nonlocal-tmp"  # new content, before it is renamed into place
KEEP_SUFFIX = ".yolo-nonlocal-keep"  # a hard link to an original, until the transaction is over


def read_only(path: Path) -> bool:
    """True for a file nobody may write (mode bits), or that this user may not write (os.access)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    return not (mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) or not os.access(path, os.W_OK)


@dataclass
class _Meta:
    """Owner, group and permission bits a written file must have."""

    uid: int
    gid: int
    mode: int


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _meta_for(path: Path) -> _Meta:
    """The original's owner, group and mode; for a new file, its folder's owner and group and the umask's mode."""
    try:
        st = path.stat()
        return _Meta(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    except FileNotFoundError:
        parent = path.parent.stat()
        return _Meta(parent.st_uid, parent.st_gid, 0o666 & ~_umask())


def _own(fd_or_path, uid: int, gid: int, current: os.stat_result) -> None:
    """Give a file or folder that owner and group where this process may (root may; others, their own groups)."""
    if (current.st_uid, current.st_gid) == (uid, gid):
        return
    try:
        os.chown(fd_or_path, uid, gid)
    except OSError:
        try:  # not root: a member of the group may still set the group
            os.chown(fd_or_path, -1, gid)
        except OSError:
            pass


class Transaction:
    """Write or delete a set of files all or nothing (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ops: list[tuple[Path, bytes | None]] = []  # (path, new bytes or None to delete)

    def write(self, path: Path, data: bytes) -> None:
        self.ops.append((path, data))

    def delete(self, path: Path) -> None:
        self.ops.append((path, None))

    def _where(self, path: Path) -> str:
        try:
            return rel(self.root, path) if path != self.root else "."
        except ValueError:  # pragma: no cover - every path of the patcher is inside the tree
            return str(path)

    def preflight(self) -> None:
        """Refuse, before writing anything, what would fail for certain; PatchError listing every problem."""
        problems = []
        for path, _ in self.ops:
            name = self._where(path)
            if path.is_dir() and not path.is_symlink():
                problems.append(f"{name} is a folder where a file should be (move it away)")
                continue
            if path.exists() and read_only(path):
                problems.append(f"{name} is read-only (make it writable, e.g. chmod u+w {name})")
            parent = path.parent
            while not parent.exists() and not parent.is_symlink():
                parent = parent.parent
            if not parent.is_dir():
                problems.append(f"{self._where(parent)} is a file where a folder should be (move it away)")
            elif not os.access(parent, os.W_OK | os.X_OK):
                problems.append(f"cannot write in folder {self._where(parent)}")
        if problems:
            raise PatchError("nothing was changed: " + "; ".join(dict.fromkeys(problems)))

    def commit(self, replace: Callable[[str, str], None] | None = None) -> None:
        """Apply every operation, or none (``replace`` stands in for ``os.replace`` in tests)."""
        replace = replace or os.replace
        self.preflight()
        made_dirs: list[Path] = []
        temps: list[Path] = []  # every temporary file created, registered before it is written
        keeps: list[tuple[Path, Path]] = []  # (target, hard link to its original)
        copies: list[tuple[Path, bytes, os.stat_result]] = []  # originals kept in memory where links fail
        staged: list[tuple[Path, Path | None]] = []  # (target, temporary with its new content, or None: delete)
        done: list[Path] = []  # targets already changed
        try:
            for path, data in self.ops:
                if data is None:
                    staged.append((path, None))
                    continue
                self._make_dirs(path.parent, made_dirs)
                meta = _meta_for(path)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
                temps.append(Path(tmp))
                with os.fdopen(fd, "wb") as f:
                    _own(f.fileno(), meta.uid, meta.gid, os.fstat(f.fileno()))
                    os.fchmod(f.fileno(), meta.mode)
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                staged.append((path, Path(tmp)))
            for path, _ in staged:  # keep every original, so that a rollback restores the very same file
                if path.exists() or path.is_symlink():
                    keep = self._keep(path, copies)
                    if keep is not None:
                        keeps.append((path, keep))
            for path, tmp in staged:
                if tmp is None:
                    if path.exists() or path.is_symlink():
                        path.unlink()
                else:
                    replace(str(tmp), str(path))
                    temps.remove(tmp)
                done.append(path)
        except BaseException as error:
            lost = self._rollback(done, keeps, copies, temps, made_dirs)
            if lost:
                raise PatchError(
                    f"writing failed ({getattr(error, 'strerror', None) or error}) and " + "; ".join(lost)
                ) from error
            if isinstance(error, OSError):
                where = getattr(error, "filename", "") or "a file"
                raise PatchError(f"nothing was changed: writing {where} failed "
                                 f"({error.strerror or error}); every file was put back") from error
            raise
        for _, keep in keeps:  # success: the originals are no longer needed
            try:
                keep.unlink()
            except OSError:  # pragma: no cover - an unlink in a folder just written to
                pass

    def _make_dirs(self, folder: Path, made: list[Path]) -> None:
        """Create ``folder`` and its missing parents, each owned like the folder that holds it."""
        missing = []
        d = folder
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
            parent = d.parent.stat()
            _own(d, parent.st_uid, parent.st_gid, d.stat())

    @staticmethod
    def _keep(path: Path, copies: list[tuple[Path, bytes, os.stat_result]]) -> Path | None:
        """A hard link to ``path`` beside it; where links are not supported, its bytes and stat in memory."""
        for _ in range(100):
            keep = path.with_name(f".{path.name}.{secrets.token_hex(4)}{KEEP_SUFFIX}")
            try:
                os.link(path, keep, follow_symlinks=False)
                return keep
            except FileExistsError:
                continue
            except OSError:
                break
        copies.append((path, path.read_bytes(), path.stat()))
        return None

    def _rollback(self, done: list[Path], keeps: list[tuple[Path, Path]],
                  copies: list[tuple[Path, bytes, os.stat_result]], temps: list[Path],
                  made_dirs: list[Path]) -> list[str]:
        """Undo the changed targets and remove every temporary; the problems it could not undo, for the message."""
        lost: list[str] = []
        kept = dict(keeps)
        copied = {p: (data, st) for p, data, st in copies}
        for path in reversed(done):
            try:
                if path in kept:
                    os.replace(kept.pop(path), path)
                elif path in copied:
                    data, st = copied[path]
                    self._restore_copy(path, data, st, temps)
                else:  # a file this transaction created
                    path.unlink()
            except OSError as e:
                where = f"; its original is {self._where(kept[path])}" if path in kept else ""
                lost.append(f"{self._where(path)} could not be put back ({e.strerror or e}){where}")
        for path, keep in kept.items():  # links to originals that were never replaced
            if path in done:
                continue  # its restore failed: the link is the original, keep it
            try:
                keep.unlink()
            except OSError:  # pragma: no cover
                pass
        for tmp in temps:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:  # pragma: no cover - a folder just written in refuses an unlink
                lost.append(f"the temporary file {self._where(tmp)} could not be removed ({e.strerror or e})")
        for d in reversed(made_dirs):
            try:
                d.rmdir()
            except OSError:
                pass
        return lost

    @staticmethod
    def _restore_copy(path: Path, data: bytes, st: os.stat_result, temps: list[Path]) -> None:
        """Write an original back from memory with its owner, group, mode and times (where links failed)."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        temps.append(Path(tmp))
        with os.fdopen(fd, "wb") as f:
            _own(f.fileno(), st.st_uid, st.st_gid, os.fstat(f.fileno()))
            os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
            f.write(data)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, path)
        temps.remove(Path(tmp))
