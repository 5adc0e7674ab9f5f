"""Cost of the COCO evaluation that yolo-nonlocal adds to every validation: pycocotools vs faster-coco-eval.

A synthetic validation set of IMAGES images x BOXES ground-truth boxes (sizes log-uniform 3..300 px, so every
COCO and tiny range is populated) and about as many detections (jittered true positives, class confusions,
false positives) is scored by ``yolo_nonlocal.metrics.coco.cocoeval_stats`` with each backend, with COCO's ranges
and with the tiny ranges added. This is the extra work per validation (the ground truth is built once and
cached); the ground-truth build itself is timed on a YOLO dataset written to a temp dir (cold, then cached).

    python benchmarks/coco_eval.py                   # 5,000 images x 20 boxes (the issue's sizing)
    python benchmarks/coco_eval.py --images 500      # quicker
    python benchmarks/coco_eval.py --no-dataset      # skip the on-disk ground-truth timing
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from yolo_nonlocal.utils.machine import describe_machine


def synthetic(images: int, boxes: int, classes: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """A COCO GT dict (640x480 images) and detections in its ids."""
    rng = np.random.default_rng(seed)
    W, H = 640, 480
    gt_images = [{"id": i + 1, "file_name": f"{i:06d}.jpg", "width": W, "height": H} for i in range(images)]
    anns, dets = [], []
    for img in gt_images:
        sizes = np.exp(rng.uniform(np.log(3), np.log(300), (boxes, 2)))
        sizes = np.minimum(sizes, [W - 1, H - 1])
        x0 = rng.uniform(0, W - sizes[:, 0])
        y0 = rng.uniform(0, H - sizes[:, 1])
        cls = rng.integers(0, classes, boxes)
        for (w, h), x, y, c in zip(sizes, x0, y0, cls):
            box = [float(x), float(y), float(w), float(h)]
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": int(c) + 1, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
            if rng.random() < 0.8:  # found, with some localisation noise and an occasional class confusion
                jx, jy = rng.normal(0, 0.1 * w), rng.normal(0, 0.1 * h)
                dc = int(c) if rng.random() > 0.1 else int(rng.integers(0, classes))
                dets.append({"image_id": img["id"], "category_id": dc + 1,
                             "bbox": [float(x + jx), float(y + jy), float(w * np.exp(rng.normal(0, .1))),
                                      float(h * np.exp(rng.normal(0, .1)))], "score": float(rng.uniform(0.3, 1))})
        for _ in range(boxes // 4):  # false positives
            w, h = np.exp(rng.uniform(np.log(3), np.log(200), 2))
            dets.append({"image_id": img["id"], "category_id": int(rng.integers(1, classes + 1)),
                         "bbox": [float(rng.uniform(0, W - w)), float(rng.uniform(0, H - h)), float(w), float(h)],
                         "score": float(rng.uniform(0, 0.7))})
    gt = {"images": gt_images, "annotations": anns,
          "categories": [{"id": k + 1, "name": f"class{k}"} for k in range(classes)]}
    return gt, dets


def time_backends(gt: dict, dets: list[dict], repeats: int) -> list[tuple[str, str, float, dict]]:
    from yolo_nonlocal.metrics.coco import cocoeval_stats, resolve_backend

    rows = []
    for tiny in (False, True):
        for backend in ("pycocotools", "faster-coco-eval"):
            try:
                resolve_backend(backend)
            except ValueError as e:
                print(f"skipping {backend}: {e}", file=sys.stderr)
                continue
            best, stats = float("inf"), {}
            for _ in range(repeats):
                t0 = time.perf_counter()
                stats = cocoeval_stats(gt, dets, tiny=tiny, backend=backend)
                best = min(best, time.perf_counter() - t0)
            rows.append((backend, "COCO + tiny" if tiny else "COCO", best, stats))
    return rows


def time_ground_truth(gt: dict, dets: list[dict]) -> tuple[float, float, float]:
    """Write gt as a YOLO dataset (blank 640x480 PNGs), then time build_ground_truth cold and from the cache, and
    one validation's whole extra work in the Ultralytics integration (collected boxes -> COCOeval, GT in memory)."""
    import cv2

    from yolo_nonlocal.metrics.ground_truth import build_ground_truth, clear_memory_cache

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images" / "val").mkdir(parents=True)
        (root / "labels" / "val").mkdir(parents=True)
        blank = cv2.imencode(".png", np.zeros((480, 640, 3), np.uint8))[1].tobytes()
        per_image: dict[int, list[str]] = {}
        for a in gt["annotations"]:
            x, y, w, h = a["bbox"]
            per_image.setdefault(a["image_id"], []).append(
                f"{a['category_id'] - 1} {(x + w / 2) / 640:.6f} {(y + h / 2) / 480:.6f} {w / 640:.6f} {h / 480:.6f}")
        for img in gt["images"]:
            stem = Path(img["file_name"]).stem
            (root / "images" / "val" / f"{stem}.png").write_bytes(blank)
            (root / "labels" / "val" / f"{stem}.txt").write_text("\n".join(per_image.get(img["id"], [])) + "\n")
        data = {"path": str(root), "val": "images/val", "names": [c["name"] for c in gt["categories"]]}
        os.environ["YOLO_NONLOCAL_CACHE_DIR"] = str(root / "cache")
        clear_memory_cache()
        t0 = time.perf_counter()
        build_ground_truth(data)
        cold = time.perf_counter() - t0
        clear_memory_cache()
        t0 = time.perf_counter()
        build_ground_truth(data)
        cached = time.perf_counter() - t0
        per_epoch = time_validator_path(gt, dets, sorted(str(p) for p in (root / "images" / "val").iterdir()))
    return cold, cached, per_epoch


def time_validator_path(gt: dict, dets: list[dict], image_files: list[str]) -> float:
    """What ultralytics_metrics does after each validation: the collected per-image arrays -> COCO stats."""
    from types import SimpleNamespace

    from yolo_nonlocal.integrations.ultralytics import metrics as um

    by_image: dict[int, list[dict]] = {}
    for d in dets:
        by_image.setdefault(d["image_id"], []).append(d)
    records = []
    for img, path in zip(gt["images"], image_files):  # both in file-name order
        ds = by_image.get(img["id"], [])
        records.append((path, np.array([d["bbox"] for d in ds], np.float32).reshape(-1, 4),
                        np.array([d["score"] for d in ds], np.float32), np.array([d["category_id"] - 1 for d in ds])))
    names = {c["id"] - 1: c["name"] for c in gt["categories"]}
    validator = SimpleNamespace(dataloader=SimpleNamespace(dataset=SimpleNamespace(im_files=image_files)),
                                data={"names": names}, names=names, args=SimpleNamespace(single_cls=False, classes=None))
    st = um._Collector()
    st.records = records
    um._evaluate(validator, st, tiny=False)  # first validation: the GT comes from the file cache
    t0 = time.perf_counter()
    um._evaluate(validator, st, tiny=False)  # every later one: GT in memory
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--boxes", type=int, default=20, help="ground-truth boxes per image")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1, help="runs per backend; the best is reported")
    ap.add_argument("--no-dataset", action="store_true", help="skip timing the ground-truth build from files")
    args = ap.parse_args(argv)

    gt, dets = synthetic(args.images, args.boxes, args.classes)
    print(f"machine: {describe_machine(packages=('numpy', 'pycocotools', 'faster-coco-eval'))}")
    print(f"data: {args.images} images x {args.boxes} boxes = {len(gt['annotations'])} objects, "
          f"{len(dets)} detections, {args.classes} classes")
    rows = time_backends(gt, dets, args.repeats)
    print()
    print("| backend          | ranges      | seconds |    AP    |   APs    |   APvt   |")
    print("|------------------|-------------|--------:|---------:|---------:|---------:|")
    for backend, ranges, seconds, stats in rows:
        vt = f"{stats['APvt']:.4f}" if "APvt" in stats else "-"
        print(f"| {backend:<16} | {ranges:<11} | {seconds:7.2f} | {stats['AP']:8.4f} | {stats['APs']:8.4f} | {vt:>8} |")
    for ranges in ("COCO", "COCO + tiny"):
        pair = [r[3] for r in rows if r[1] == ranges]
        if len(pair) == 2:
            diff = max(abs(pair[0][k] - pair[1][k]) for k in pair[0])
            print(f"{ranges}: largest difference between the backends over all keys = {diff:.2e}")
    if not args.no_dataset:
        cold, cached, per_epoch = time_ground_truth(gt, dets)
        print(f"ground truth from {args.images} YOLO label files + image headers: {cold:.2f} s cold, "
              f"{cached:.2f} s from the cache")
        print(f"Ultralytics integration, extra work per validation after the first (collected boxes -> stats, "
              f"backend auto): {per_epoch:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
