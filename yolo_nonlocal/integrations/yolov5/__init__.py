"""YOLOv5 / YOLOv7 git clones: make ``models/yolo.py`` understand ``NonLocal`` rows, and undo it byte for byte.

Modules, by concept: :mod:`.tree` (layout, flavour, :class:`PatchError`), :mod:`.source_edit` (the text edit
of models/yolo.py and its inverse), :mod:`.rows` (the NonLocal arguments the patched parse_model builds from
a row and the YAML's ``nonlocal_init_*`` keys), :mod:`.transaction` (all-or-nothing writes), :mod:`.yamls`
(the model YAMLs that build on the tree), :mod:`.manifest` (the record in ``.yolo-nonlocal/``),
:mod:`.hazards` (known problems with this Python's packages: ``hazards.hazards(root)``), :mod:`.api`
(:func:`patch`, :func:`unpatch`, :func:`status`) and :mod:`.results`. The names below are imported on first
use, so this package imports nothing heavy.
"""

from __future__ import annotations

from yolo_nonlocal.utils.lazy import lazy_exports

_EXPORTS = {
    "patch": "api",
    "unpatch": "api",
    "status": "api",
    "PatchResult": "results",
    "UnpatchResult": "results",
    "TreeStatus": "results",
    "PatchError": "tree",
    "FLAVOURS": "tree",
    "YOLO_PY": "tree",
    "STATE_DIR": "tree",
    "detect_flavour": "tree",
    "MARKER": "source_edit",
    "patch_source": "source_edit",
    "unpatch_source": "source_edit",
    "YAMLS": "yamls",
    "source_yaml_dir": "yamls",
}

__all__ = ["FLAVOURS", "MARKER", "STATE_DIR", "YAMLS", "YOLO_PY", "PatchError", "PatchResult", "TreeStatus", "UnpatchResult", "detect_flavour", "patch", "patch_source", "source_yaml_dir", "status", "unpatch", "unpatch_source"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
