"""Check (or, with --write, regenerate) the reference diffs in patches/ against real upstream git clones.

    python patches/check_reference_diffs.py --yolov5 ~/src/yolov5 --yolov7 ~/src/yolov7 [--write]

Needs git and full clones (or mirrors) of https://github.com/ultralytics/yolov5 and
https://github.com/WongKinYiu/yolov7 with their tags and branches; it reaches no network itself. For each
diff of SOURCES below it exports ``models/`` and ``cfg/`` of the named ref from the clone into a temporary
folder (``git archive``), and checks that

1. ``yolo-nonlocal yolov5 patch path=TREE dry_run=True`` prints exactly the diff's bytes (``--write``
   rewrites the diff instead), and
2. ``git apply --check`` accepts the diff in that tree, and ``git apply`` then ``git apply -R`` give
   back every byte;

and prints the commit and the blob id of ``models/yolo.py`` each diff is for (patches/README.md lists them).
The offline tests (tests/integrations/yolov5/test_yolov5_upstream.py) check what needs no clone. Nothing
of the upstream trees is copied into this repository: the diffs hold only our added lines and three lines
of upstream context around each.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# diff -> (clone, ref). Tags for YOLOv5 releases; branch heads for YOLOv5 master and the YOLOv7 branches.
SOURCES = {
    "yolov5-v5.0.diff": ("yolov5", "v5.0"),
    "yolov5-v6.0.diff": ("yolov5", "v6.0"),
    "yolov5-v6.1.diff": ("yolov5", "v6.1"),
    "yolov5-v6.2.diff": ("yolov5", "v6.2"),
    "yolov5-v7.0.diff": ("yolov5", "v7.0"),
    "yolov5-master.diff": ("yolov5", "master"),
    "yolov7-main.diff": ("yolov7", "main"),
    "yolov7-u5.diff": ("yolov7", "u5"),
    "yolov7-u6.diff": ("yolov7", "u6"),
}


def _git(clone: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(clone), *args], check=True, capture_output=True).stdout


def _resolve(clone: Path, ref: str) -> str:
    for candidate in (ref, f"origin/{ref}", f"refs/tags/{ref}"):
        out = subprocess.run(["git", "-C", str(clone), "rev-parse", "--verify", "-q", f"{candidate}^{{commit}}"],
                             capture_output=True, text=True, check=False)
        if out.returncode == 0:
            return out.stdout.strip()
    raise SystemExit(f"{clone} has no ref {ref!r}: fetch its tags and branches (git fetch --tags origin)")


def export(clone: Path, commit: str, dst: Path) -> Path:
    """``models/`` and, where present, ``cfg/`` of ``commit``, written under ``dst``."""
    paths = [p for p in ("models", "cfg") if _git(clone, "ls-tree", "--name-only", commit, p).strip()]
    data = _git(clone, "archive", "--format=tar", commit, *paths)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dst, filter="data") if sys.version_info >= (3, 12) else tar.extractall(dst)
    return dst


def snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--yolov5", type=Path, required=True, help="git clone (or mirror) of ultralytics/yolov5")
    p.add_argument("--yolov7", type=Path, required=True, help="git clone (or mirror) of WongKinYiu/yolov7")
    p.add_argument("--write", action="store_true", help="rewrite the diffs instead of comparing them")
    args = p.parse_args(argv)
    from yolo_nonlocal.integrations.yolov5 import patch

    clones = {"yolov5": args.yolov5, "yolov7": args.yolov7}
    failures = 0
    for name, (repo, ref) in SOURCES.items():
        clone = clones[repo]
        commit = _resolve(clone, ref)
        blob = _git(clone, "rev-parse", f"{commit}:models/yolo.py").decode().strip()
        with tempfile.TemporaryDirectory() as tmp:
            tree = export(clone, commit, Path(tmp))
            diff = patch(tree, dry_run=True).diff
            ref_file = HERE / name
            problems = []
            if args.write:
                ref_file.write_text(diff, encoding="utf-8", newline="")
            elif not ref_file.is_file() or ref_file.read_text(encoding="utf-8") != diff:
                problems.append("differs from the patcher's dry run (regenerate with --write)")
            before = snapshot(tree)
            check = subprocess.run(["git", "apply", "--check", str(ref_file)], cwd=tree, capture_output=True, text=True, check=False)
            if check.returncode != 0:
                problems.append(f"git apply --check: {check.stderr.strip()}")
            else:
                subprocess.run(["git", "apply", str(ref_file)], cwd=tree, check=True)
                subprocess.run(["git", "apply", "-R", str(ref_file)], cwd=tree, check=True)
                if snapshot(tree) != before:
                    problems.append("git apply then git apply -R did not give back every byte")
        status = "FAILED: " + "; ".join(problems) if problems else ("written" if args.write else "ok")
        failures += bool(problems)
        print(f"{name:22} {repo}@{ref:7} commit {commit[:12]} models/yolo.py blob {blob[:12]}  {status}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
