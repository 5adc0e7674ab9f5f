"""Interpreter start-up hook: register NonLocal with Ultralytics when, and only when, Ultralytics loads.

Ultralytics resolves the module names of a model YAML with ``globals()[name]`` inside
``ultralytics.nn.tasks`` and has no plugin mechanism, so ``yolo train model=yolov8n-nl.yaml`` can only
work if ``NonLocal`` is in that namespace before the YAML is parsed, in every process: the ``yolo``
console script, a notebook, and the DDP workers Ultralytics spawns as fresh interpreters.

The wheel installs two start-up files at the root of site-packages that call :func:`install`:

- ``yolo_nonlocal-autoregister.pth``, a ``.pth`` import line, read by every Python up to 3.14;
- ``yolo_nonlocal-autoregister.start``, the PEP 829 entry point ``yolo_nonlocal._startup:install``,
  read by Python 3.15+ (which then ignores the import line of the matching ``.pth``).

:func:`install` only appends a tiny finder to :data:`sys.meta_path`: it imports nothing but ``os`` and
``sys`` (already loaded at start-up), so neither torch nor Ultralytics is imported at interpreter start.
The finder answers for exactly one module name, ``ultralytics.nn.tasks``: it lets the normal finders
locate it, then wraps the loader so that right after the module body has executed it calls
:func:`yolo_nonlocal.integrations.ultralytics.registration.register`.

Nothing here may break Python: :func:`install` never raises, and a failing ``register()`` (a broken or
half-uninstalled package) only prints one warning line and leaves Ultralytics usable. Set
``YOLO_NONLOCAL_NO_AUTOREGISTER=1`` to switch the hook off for a process (explicit
``yolo_nonlocal.register()`` still works).
"""

from __future__ import annotations

import os
import sys

__all__ = ["install", "uninstall", "TARGET", "DISABLE_ENV"]

TARGET = "ultralytics.nn.tasks"  # the module whose globals() Ultralytics resolves YAML module names in
DISABLE_ENV = "YOLO_NONLOCAL_NO_AUTOREGISTER"
_MARKER = "_yolo_nonlocal_autoregister"  # attribute that identifies our finder, even across module reloads


def _register_now() -> None:
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


class _RegisteringLoader:
    """Loader proxy: runs the real loader's ``exec_module``, then registers NonLocal.

    Every other attribute (``get_source``, ``get_filename``, ``is_package``, ...) is the real loader's, so
    tracebacks, ``inspect`` and ``linecache`` behave as without the hook.
    """

    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        # Point the module back at the real loader: nothing downstream should see the proxy.
        try:
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
        except Exception:
            pass
        _register_now()


class _AutoRegisterFinder:
    """A ``sys.meta_path`` finder that only ever answers for ``ultralytics.nn.tasks``."""

    _yolo_nonlocal_autoregister = True

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET:
            return None
        for finder in list(sys.meta_path):
            if finder is self or getattr(finder, _MARKER, False):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            try:
                spec = find_spec(fullname, path, target)
            except Exception:
                continue
            if spec is None:
                continue
            loader = getattr(spec, "loader", None)
            if loader is not None and hasattr(loader, "exec_module") and not isinstance(loader, _RegisteringLoader):
                spec.loader = _RegisteringLoader(loader)
            return spec
        return None

    def invalidate_caches(self) -> None:  # importlib.invalidate_caches() calls this on every finder
        pass

    def __repr__(self) -> str:
        return f"<yolo_nonlocal autoregister finder for {TARGET}>"


def installed() -> bool:
    """Whether the finder is in ``sys.meta_path``."""
    return any(getattr(f, _MARKER, False) for f in sys.meta_path)


def install() -> None:
    """Put the auto-register finder in ``sys.meta_path`` (idempotent). Never raises.

    If ``ultralytics.nn.tasks`` is already imported (``install()`` called late, by hand), register now.
    """
    try:
        if os.environ.get(DISABLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
            return
        if TARGET in sys.modules:
            _register_now()
            return
        if not installed():
            sys.meta_path.insert(0, _AutoRegisterFinder())
    except Exception:  # start-up must survive anything
        pass


def uninstall() -> None:
    """Remove the finder from ``sys.meta_path`` (registration already done stays in place)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, _MARKER, False)]
