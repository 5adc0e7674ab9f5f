"""Attention kernels behind :class:`yolo_nonlocal.nonlocal_block.NonLocal` (torch only, no framework)."""
