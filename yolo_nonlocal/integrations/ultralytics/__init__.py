"""Ultralytics integration (YOLOv8 / YOLO11 / YOLO26): registration, YAML rows, weights, FLOPs, metrics.

Importing this package imports neither torch nor Ultralytics; :func:`register` does, when called (the
start-up hook of :mod:`yolo_nonlocal._startup` calls it as soon as ``ultralytics.nn.tasks`` is imported).
"""
