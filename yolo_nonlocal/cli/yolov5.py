"""``yolo-nonlocal yolov5 {patch|unpatch|status}``: YOLOv5 / YOLOv7 git clones."""

from __future__ import annotations

VERBS = ("patch", "unpatch", "status")


def main(argv: list[str]) -> int:
    from yolo_nonlocal.integrations.yolov5 import patcher

    argv = list(argv)
    if not argv or argv[0] not in VERBS:
        from yolo_nonlocal.cli.args import error

        if argv and argv[0] in {"-h", "--help", "help"}:
            print("usage: yolo-nonlocal yolov5 {patch|unpatch|status} PATH ...")
            return 0
        return error("yolov5", f"expected one of {', '.join(VERBS)} after 'yolov5', got {argv[:1] or 'nothing'}")
    return int(getattr(patcher, f"cli_{argv[0]}")(argv[1:]) or 0)
