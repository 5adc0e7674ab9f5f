"""Patch, unpatch and inspect a YOLOv5 (ultralytics/yolov5) or YOLOv7 (WongKinYiu/yolov7) clone.

:func:`patch` edits ``models/yolo.py`` (see :mod:`.source_edit`), copies the Non-local model YAMLs that build
on the tree's version (see :mod:`.yamls`) and records a manifest plus a backup of the original in
``PATH/.yolo-nonlocal/``, all in one :class:`~.transaction.Transaction`. :func:`unpatch` restores every file
byte for byte from that record, or, where the record is gone or the file was edited since, removes the
lines marked ``# yolo-nonlocal``. :func:`status` says which of these a tree is in, plus the known hazards of
the tree with this Python's torch, numpy and Pillow (see :mod:`.hazards`).

Guarantees: idempotent (a second patch changes nothing); atomic (the new ``models/yolo.py`` is parsed and
checked before anything is written, and a failure anywhere leaves every file as it was, temporaries
included); owner, group and mode of every written file kept (new files follow their folder); refusals say
what was expected and how to make the edit by hand. Checkpoints pickle the block as
``yolo_nonlocal.nonlocal_block.NonLocal``, so the tree's own ``attempt_load`` (detect.py, val.py) loads them
wherever this package is installed.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from yolo_nonlocal.integrations.yolov5.hazards import hazards
from yolo_nonlocal.integrations.yolov5.manifest import (
    GITIGNORE,
    MANIFEST,
    load_manifest,
    manifest_bytes,
    state_dir,
)
from yolo_nonlocal.integrations.yolov5.results import (
    PatchResult,
    TreeStatus,
    UnpatchResult,
)
from yolo_nonlocal.integrations.yolov5.source_edit import (
    MARKER,
    git_diff,
    marked_lines,
    patch_source,
    unpatch_source,
)
from yolo_nonlocal.integrations.yolov5.transaction import Transaction
from yolo_nonlocal.integrations.yolov5.tree import (
    FLAVOURS,
    YOLO_PY,
    PatchError,
    check_tree,
    detect_flavour,
    read_text,
    rel,
    sha256,
)
from yolo_nonlocal.integrations.yolov5.yamls import plan_yamls

__all__ = ["patch", "status", "unpatch"]


def _resolve_flavour(root: Path, flavour: str | None) -> str:
    if flavour is None:
        return detect_flavour(root)
    if flavour not in FLAVOURS:
        raise PatchError(f"unknown flavour {flavour!r}; expected one of {', '.join(FLAVOURS)}")
    detect_flavour(root)  # still checks that it is a tree at all
    return flavour


def _patched_tree_flavour(root: Path, manifest: dict | None) -> str:
    """The flavour of a tree to undo or inspect: the recorded one, else detected.

    A tree with a record or with marked lines is one to undo even where parse_model was renamed since.
    """
    _, text = read_text(check_tree(root))
    detected = detect_flavour(root, require_parse_model=manifest is None and not marked_lines(text))
    recorded = (manifest or {}).get("flavour")
    return recorded if recorded in FLAVOURS else detected


def _file_bytes(root: Path, dst: Path) -> bytes | None:
    """The bytes at ``dst``, None where it does not exist; PatchError for a folder or an unreadable file."""
    if dst.is_dir():
        raise PatchError(f"{rel(root, dst)} is a folder where yolo-nonlocal would put its YAML of that name; nothing "
                         "was changed. Rename or remove that folder, then patch again.")
    try:
        return dst.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PatchError(f"cannot read {rel(root, dst)} ({e.strerror or e}); nothing was changed") from None


def patch(path: os.PathLike | str, dry_run: bool = False, flavour: str | None = None) -> PatchResult:
    """Patch the YOLOv5/YOLOv7 tree at ``path`` (see the module docstring); idempotent and atomic.

    Args:
        path: root of the clone (the folder with ``models/yolo.py``).
        dry_run: compute and return the diff, write nothing.
        flavour: "yolov5" or "yolov7" to override detection (which only chooses the YAMLs to copy).
    Raises:
        PatchError: the tree is not one the patcher understands, a file is not writable, or a file it would
            create exists with other content; nothing has been changed.
    """
    root = Path(path).resolve()
    fl = _resolve_flavour(root, flavour)
    manifest = load_manifest(root)
    if manifest and manifest.get("flavour") != fl:
        raise PatchError(
            f"{root} was patched as {manifest.get('flavour')}; run `yolo-nonlocal yolov5 unpatch path={path}` "
            f"before patching it as {fl}"
        )
    yolo_py = root / YOLO_PY
    old_bytes, old_text = read_text(yolo_py)
    new_text = patch_source(old_text, YOLO_PY)
    new_bytes = new_text.encode("utf-8")

    tx = Transaction(root)
    changed: list[str] = []
    kept: list[str] = []
    diffs: list[str] = []
    notes: list[str] = []
    files = dict(manifest["files"]) if manifest else {}
    if new_bytes != old_bytes:
        changed.append(YOLO_PY)
        diffs.append(git_diff(YOLO_PY, old_bytes, new_bytes))
        tx.write(yolo_py, new_bytes)
        tx.write(state_dir(root) / "backup" / YOLO_PY, old_bytes)
        files[YOLO_PY] = {
            "action": "modified",
            "original_sha256": sha256(old_bytes),
            "patched_sha256": sha256(new_bytes),
            "backup": f"backup/{YOLO_PY}",
        }
    elif YOLO_PY in files:
        files[YOLO_PY]["patched_sha256"] = sha256(new_bytes)

    created_dirs = list((manifest or {}).get("created_dirs", []))
    for copy in plan_yamls(root, fl):
        dst_rel, data = copy.dst, copy.data
        if data is None:
            notes.append(f"{dst_rel}: {copy.note}")
            continue
        if copy.note:
            notes.append(f"{dst_rel}: {copy.note}")
        dst = root / dst_rel
        record = files.get(dst_rel)
        current = _file_bytes(root, dst)
        if current is not None:
            if current == data:
                if record is None and manifest is not None:
                    files[dst_rel] = {"action": "created", "sha256": sha256(data)}
                continue
            if record is None:
                raise PatchError(
                    f"{dst_rel} exists and differs from the yolo-nonlocal YAML of that name; nothing was changed. "
                    f"Rename or remove your {dst_rel}, then patch again."
                )
            if sha256(current) != record.get("sha256"):
                kept.append(dst_rel)  # the user's edits win; unpatch will refuse to delete it
                continue
        changed.append(dst_rel)
        d = dst.parent
        while not d.exists() and d != root:  # folders the patch creates (cfg/training in a bare tree)
            if rel(root, d) not in created_dirs:
                created_dirs.append(rel(root, d))
            d = d.parent
        diffs.append(git_diff(dst_rel, current, data))
        tx.write(dst, data)
        files[dst_rel] = {"action": "created", "sha256": sha256(data)}

    if changed and not dry_run:
        tx.write(state_dir(root) / MANIFEST, manifest_bytes(manifest, fl, files, created_dirs))
        if not (state_dir(root) / ".gitignore").exists():
            tx.write(state_dir(root) / ".gitignore", GITIGNORE)
        tx.commit()
    return PatchResult(root, fl, tuple(changed), tuple(kept), dry_run, "".join(diffs), tuple(notes))


def _strip(text: str) -> bytes:
    """``text`` without its marked lines, as bytes; PatchError naming the lines if what remains is not Python."""
    stripped = unpatch_source(text)
    try:
        ast.parse(stripped)
    except SyntaxError as e:
        lines = ", ".join(str(n) for n, _ in marked_lines(text))
        raise PatchError(
            f"{YOLO_PY} without its lines marked `{MARKER}` (lines {lines}) would not compile ({e.msg}, line "
            f"{e.lineno}); nothing was changed. Remove those lines by hand and fix what surrounds them."
        ) from None
    return stripped.encode("utf-8")


def unpatch(path: os.PathLike | str, keep_edited: bool = False) -> UnpatchResult:
    """Restore a patched tree: models/yolo.py byte for byte, the copied YAMLs removed, the state folder removed.

    A copied YAML edited since is not removed: the call refuses (PatchError, nothing changed) unless
    ``keep_edited`` is true, in which case it is left in place. When models/yolo.py itself was edited after
    the patch (``parse_model`` renamed included), the marked lines are removed and the user's other edits
    kept. Without a state folder (a tree patched with ``git apply``), the marked lines are removed and
    unedited copies of the YAMLs deleted.
    """
    root = Path(path).resolve()
    manifest = load_manifest(root)
    fl = _patched_tree_flavour(root, manifest)
    yolo_py = root / YOLO_PY
    cur_bytes, cur_text = read_text(yolo_py)
    tx = Transaction(root)
    restored: list[str] = []
    kept: list[str] = []
    edited: list[str] = []
    stripped = False
    marked = bool(marked_lines(cur_text))

    if manifest:
        record = manifest["files"].get(YOLO_PY)
        if record and sha256(cur_bytes) == record["patched_sha256"]:
            backup = state_dir(root) / record["backup"]
            try:
                original = backup.read_bytes()
            except OSError:
                lines = ", ".join(str(n) for n, _ in marked_lines(cur_text))
                raise PatchError(f"the backup {rel(root, backup)} is missing; nothing was changed. Remove the "
                                 f"lines marked `{MARKER}` from {YOLO_PY} by hand (lines {lines}), then delete "
                                 f"the {rel(root, state_dir(root))} folder.") from None
            if sha256(original) != record["original_sha256"]:
                raise PatchError(f"the backup {rel(root, backup)} does not match its checksum; nothing was changed")
            tx.write(yolo_py, original)
            restored.append(YOLO_PY)
        elif marked:
            tx.write(yolo_py, _strip(cur_text))
            restored.append(YOLO_PY)
            stripped = record is not None  # edited after our patch (else it came patched, e.g. by git apply)
        yaml_records = [(p, r) for p, r in manifest["files"].items() if r.get("action") == "created"]
    else:
        if marked:
            tx.write(yolo_py, _strip(cur_text))
            restored.append(YOLO_PY)
        plans = [(c.dst, {"sha256": sha256(c.data)}) for c in plan_yamls(root, fl) if c.data is not None]
        yaml_records = []
        for p, r in plans:  # without a record, only byte-identical copies are ours to remove
            current = _file_bytes(root, root / p)
            if current is None:
                continue
            if sha256(current) != r["sha256"]:
                kept.append(p)
            else:
                yaml_records.append((p, r))

    for rel_path, record in yaml_records:
        f = root / rel_path
        current = _file_bytes(root, f)
        if current is None:
            continue
        if sha256(current) != record["sha256"]:
            edited.append(rel_path)
            continue
        tx.delete(f)
        restored.append(rel_path)
    if edited and not keep_edited:
        raise PatchError(
            "nothing was changed: " + ", ".join(edited) + " changed since yolo-nonlocal copied "
            + ("it" if len(edited) == 1 else "them")
            + "; unpatching would lose your edits. Rename or move the file(s) away (they are yours now), or "
            "run `yolo-nonlocal yolov5 unpatch path=PATH keep_edited=True` to leave them in place."
        )
    kept.extend(edited)
    state = state_dir(root)
    if state.exists():
        for f in sorted(state.rglob("*"), reverse=True):
            if f.is_file() or f.is_symlink():
                tx.delete(f)
    was_patched = bool(restored) or manifest is not None
    tx.commit()
    if state.exists():
        for d in sorted((p for p in state.rglob("*") if p.is_dir()), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            state.rmdir()
        except OSError:
            pass
    for rel_dir in (manifest or {}).get("created_dirs", []):  # folders the patch made for the YAMLs, if empty now
        try:
            (root / rel_dir).rmdir()
        except OSError:
            pass
    return UnpatchResult(root, tuple(restored), tuple(kept), stripped, was_patched)


def _other_patch(text: str) -> bool:
    """True when this version would patch ``text``'s unpatched form with other marked lines than it holds
    (an earlier package version's patch, or marked lines edited by hand); False when it holds this version's,
    or when this version cannot patch it at all (status reports the edit then)."""
    try:
        return patch_source(unpatch_source(text)) != text
    except PatchError:
        return False


def status(path: os.PathLike | str) -> TreeStatus:
    """Report whether and how the tree at ``path`` is patched (``str()`` of the result is human-readable)."""
    root = Path(path).resolve()
    manifest = load_manifest(root)
    fl = _patched_tree_flavour(root, manifest)
    cur_bytes, cur_text = read_text(root / YOLO_PY)
    marked = bool(marked_lines(cur_text))
    if not marked:
        yolo_state = "stock (no NonLocal import or branch)"
        if manifest and YOLO_PY in manifest["files"]:
            yolo_state = "stock, although a patch is recorded (the file was replaced since): run patch again"
    else:
        record = (manifest or {}).get("files", {}).get(YOLO_PY)
        if record and sha256(cur_bytes) == record["patched_sha256"]:
            yolo_state = "patched (NonLocal import + parse_model branch), unchanged since"
        elif record:
            yolo_state = "patched, edited since (unpatch removes the marked lines and keeps your other edits)"
        else:
            yolo_state = "patched (marked lines present; no backup)"
        if _other_patch(cur_text):
            yolo_state += ("; its marked lines are not this version's (another yolo-nonlocal version's patch, or "
                           "edited by hand): unpatch, then patch again, for this version's")
    yamls: dict[str, str] = {}
    for copy in plan_yamls(root, fl):
        dst = root / copy.dst
        record = (manifest or {}).get("files", {}).get(copy.dst)
        if dst.is_dir():
            yamls[copy.dst] = "a folder (patch refuses to copy the YAML there)"
            continue
        if not dst.exists():
            if copy.data is None:
                yamls[copy.dst] = copy.note
            else:
                yamls[copy.dst] = "absent" + (" (was copied, since removed)" if record else "")
            continue
        digest = sha256(dst.read_bytes())
        if record:
            yamls[copy.dst] = ("copied, unchanged" if digest == record["sha256"]
                               else "copied, edited since (unpatch keeps it only with keep_edited=True)")
        elif copy.data is not None and digest == sha256(copy.data):
            yamls[copy.dst] = "present, identical to the packaged YAML"
        else:
            yamls[copy.dst] = "present, not copied by yolo-nonlocal"
        if copy.note and copy.data is not None:
            yamls[copy.dst] += f"; {copy.note}"
    return TreeStatus(root, fl, yolo_state, yamls, manifest, tuple(hazards(root)))

