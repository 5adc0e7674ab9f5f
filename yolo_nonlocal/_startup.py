"""Interpreter start-up hook: register the blocks with Ultralytics when, and only when, Ultralytics loads.

Ultralytics resolves the module names of a model YAML with ``globals()[name]`` inside
``ultralytics.nn.tasks`` and has no plugin mechanism, so ``yolo train model=yolov8n-nl.yaml`` can only
work if ``NonLocal`` is in that namespace before the YAML is parsed, in every process: the ``yolo``
console script, a notebook, and the DDP workers Ultralytics spawns as fresh interpreters.

The wheel installs two start-up files at the root of site-packages that call :func:`install`:

- ``yolo_nonlocal-autoregister.pth``, a ``.pth`` import line, read by every Python up to 3.14;
- ``yolo_nonlocal-autoregister.start``, the PEP 829 entry point ``yolo_nonlocal._startup:install``,
  read by Python 3.15+ (which then ignores the import line of the matching ``.pth``).

:func:`install` only adds one post-import hook (:mod:`yolo_nonlocal.integrations.import_hooks`, which
imports nothing but ``sys``) on ``ultralytics.nn.tasks``: neither torch nor Ultralytics is imported at
interpreter start. Right after that module's body has executed (first import and every reload) the hook
calls :func:`yolo_nonlocal.integrations.ultralytics.registration.register`, which installs every patch.

Nothing here may break Python: :func:`install` never raises, and a failing ``register()`` (a broken or
half-uninstalled package, an unsupported Ultralytics) only prints one warning line and leaves Ultralytics
usable. Set ``YOLO_NONLOCAL_NO_AUTOREGISTER=1`` to switch the hook off for a process (explicit
``yolo_nonlocal.register()`` still works); ``yolo_nonlocal.unregister()`` removes it too.
"""

from __future__ import annotations

import os
import sys

__all__ = ["install", "uninstall", "installed", "TARGET", "DISABLE_ENV", "KEY"]

TARGET = "ultralytics.nn.tasks"  # the module whose globals() Ultralytics resolves YAML module names in
DISABLE_ENV = "YOLO_NONLOCAL_NO_AUTOREGISTER"
KEY = "yolo_nonlocal.autoregister"  # the hook's key in import_hooks (registration.AUTOREGISTER_KEY)
_TRUE = ("1", "true", "yes", "on", "y", "t")  # utils.env.TRUE_STRINGS, not imported: start-up stays minimal


def _register_now(_module=None) -> None:
    """Call ``register()``; on failure warn once on stderr and carry on (never raise into an import)."""
    try:
        from yolo_nonlocal.integrations.ultralytics.registration import register

        register()
    except Exception as e:  # a broken install must not break `import ultralytics`
        try:
            sys.stderr.write(
                f"WARNING yolo-nonlocal: could not register NonLocal with Ultralytics ({type(e).__name__}: {e}); "
                "YAMLs that use NonLocal will fail. Run `python -c \"import yolo_nonlocal; yolo_nonlocal.register()\"` "
                f"for the full traceback, or set {DISABLE_ENV}=1 to silence this.\n"
            )
        except Exception:
            pass


def installed() -> bool:
    """Whether the start-up hook waits on (or has fired for) ``ultralytics.nn.tasks``."""
    try:
        from yolo_nonlocal.integrations import import_hooks

        return import_hooks.has_hook(TARGET, KEY)
    except Exception:
        return False


def install() -> None:
    """Add the auto-register hook (idempotent); if Ultralytics is already imported, register now. Never raises."""
    try:
        if os.environ.get(DISABLE_ENV, "").strip().lower() in _TRUE:
            return
        from yolo_nonlocal.integrations import import_hooks

        import_hooks.add_hook(TARGET, KEY, _register_now)
    except Exception:  # start-up must survive anything
        pass


def uninstall() -> None:
    """Remove the hook (patches already applied stay; ``yolo_nonlocal.unregister()`` removes those)."""
    try:
        from yolo_nonlocal.integrations import import_hooks

        import_hooks.remove_hook(TARGET, KEY)
    except Exception:
        pass
