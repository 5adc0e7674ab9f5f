# Put on PYTHONPATH by benchmarks/gpu_evidence.sh, where the package is not pip-installed: does what the
# installed package's start-up .pth line does (register NonLocal with Ultralytics when it is imported).
try:
    import yolo_nonlocal._startup as _m

    _m.install()
except Exception:  # never break start-up
    pass
