"""Integrations with detection frameworks the package does not own.

- :mod:`yolo_nonlocal.integrations.ultralytics`: the stock ``yolo`` command (YOLOv8 / YOLO11 / YOLO26)
  understands ``NonLocal`` rows, registered by an import hook (no code edits, no import by the user).
- :mod:`yolo_nonlocal.integrations.yolov5`: patch / unpatch / status of a YOLOv5 or YOLOv7 git clone.

Importing this package imports no framework.
"""
