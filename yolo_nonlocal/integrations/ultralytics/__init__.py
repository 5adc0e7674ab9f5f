"""Ultralytics integration (YOLOv8 / YOLO11 / YOLO26): the stock ``yolo`` command understands block rows.

Modules, by concept:

- :mod:`.registration`: ``register()`` / ``unregister()`` over one table of reversible patches, and the
  version gate (the start-up hook of :mod:`yolo_nonlocal._startup` calls ``register()`` as soon as
  ``ultralytics.nn.tasks`` is imported);
- :mod:`.blocks`: the table of blocks a YAML may name (NonLocal, GCNet's ContextBlock, the LocalBlock
  control) and their row arguments;
- :mod:`.rows`: row validation, input channels and the ``parse_model`` wrapper;
- :mod:`.yamls`: the one finder of the shipped model YAMLs, and their lookup by bare name;
- :mod:`.options`: ``nonlocal_init_gamma`` / ``nonlocal_lr_mult`` (how blocks start and learn);
- :mod:`.weights`: pretrained transfer around the blocks, and the report of what landed;
- :mod:`.flops`: true GFLOPs; :mod:`.checkpoints`: weights-only loading and the ONNX opset guard;
- :mod:`.metrics`: COCO small-object metrics in every detection validation.

Importing this package imports neither torch nor Ultralytics.
"""
