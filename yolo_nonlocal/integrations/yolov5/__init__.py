"""YOLOv5 / YOLOv7 git clones: make ``models/yolo.py`` understand ``NonLocal`` rows, and undo it byte for byte."""
