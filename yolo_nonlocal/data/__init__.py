"""Datasets: offline synthetic small-object sets, and converters for VisDrone / AI-TOD to YOLO format."""
