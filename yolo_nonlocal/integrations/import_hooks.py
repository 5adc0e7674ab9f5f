"""One post-import hook mechanism: run a callback whenever a named module has (again) finished executing.

Why
    Ultralytics has no plugin mechanism, so the package patches a few of its modules (``ultralytics.nn.tasks``,
    the trainer, the detection validator, the callbacks registry). A patch must be applied whether the module
    is already imported, is imported later, or is re-executed by ``importlib.reload`` (a reload re-runs the
    module body in the same namespace and so silently drops every wrapper), and it must be removable.

How
    One finder in :data:`sys.meta_path` answers only for the module names that have hooks. It lets the other
    finders locate the module, then wraps the loader so that right after the module body has executed (first
    import *and* every reload, since ``importlib.reload`` asks the finders again) the hooks of that name run.
    A module caught half-way through its own import when its hook is added (``import
    ultralytics.engine.trainer`` imports ``ultralytics.nn.tasks`` before it defines ``BaseTrainer``) cannot be
    hooked any more; it is *deferred* and its hooks run at the first later import of anything, or at the
    next :func:`flush` (the integration calls it on its own code paths, e.g. when a model is built).

    All state lives on the finder object, so reloading this module does not orphan hooks.

Constraints
    This module is imported at interpreter start-up by :mod:`yolo_nonlocal._startup`: it imports only ``sys``.
    A hook that raises never breaks the import: one warning line goes to stderr and the module stays usable.
"""

from __future__ import annotations

import sys

__all__ = ["add_hook", "remove_hook", "has_hook", "flush", "loaded", "wrap", "unwrap", "wrapper_key", "Patch",
           "install_patches", "uninstall_patches"]

_MARKER = "_yolo_nonlocal_import_hooks"  # identifies our finder (also an older copy of this module's)
_PATCH_KEY = "__yolo_nonlocal_patch__"  # set on every wrapper installed by wrap(): the key of its patch
_DISABLED = "__yolo_nonlocal_disabled__"  # set on a wrapper that could not be taken off (wrapped over since)


def loaded(name: str):
    """The module ``name`` if it is fully imported (not absent, not half-way through its own import), else None."""
    module = sys.modules.get(name)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module


def _warn(key: str, name: str, e: BaseException) -> None:
    try:
        sys.stderr.write(
            f"WARNING yolo-nonlocal: the hook {key!r} on {name} failed ({type(e).__name__}: {e}); "
            "its patch is not applied. Run `python -c \"import yolo_nonlocal; yolo_nonlocal.register()\"` "
            "for the full traceback.\n"
        )
    except Exception:
        pass


class _HookLoader:
    """Loader proxy: runs the real loader's ``exec_module``, then the hooks of the module's name.

    Every other attribute (``get_source``, ``get_filename``, ...) is the real loader's, so tracebacks,
    ``inspect`` and ``linecache`` behave as without the hook; the module is pointed back at the real loader.
    """

    def __init__(self, loader, finder: "_Finder") -> None:
        self._loader = loader
        self._finder = finder

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        try:
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
        except Exception:
            pass
        self._finder.run(module.__name__, module)


class _Finder:
    """The one meta-path finder; answers only for hooked names and otherwise costs a dict lookup."""

    _yolo_nonlocal_import_hooks = True

    def __init__(self) -> None:
        self.hooks: dict[str, dict[str, object]] = {}  # module name -> {key: callback(module)}
        self.deferred: set[str] = set()  # hooked names imported half-way when their hook was added
        self.executing: dict[str, object] = {}  # modules whose hooks are running (executed, not yet marked done)
        self.busy = False

    def run(self, name: str, module, keys=None) -> None:
        outer = self.executing.get(name)
        self.executing[name] = module
        try:
            for key, callback in list(self.hooks.get(name, {}).items()):
                if keys is not None and key not in keys:
                    continue
                try:
                    callback(module)
                except Exception as e:
                    _warn(key, name, e)
        finally:
            if outer is None:
                self.executing.pop(name, None)
            else:
                self.executing[name] = outer

    def flush(self) -> None:
        if not self.deferred or self.busy:
            return
        self.busy = True
        try:
            for name in sorted(self.deferred):
                module = loaded(name)
                if module is None:
                    if name not in sys.modules:  # the import failed and was rolled back
                        self.deferred.discard(name)
                    continue
                self.deferred.discard(name)
                self.run(name, module)
        finally:
            self.busy = False

    def find_spec(self, fullname, path=None, target=None):
        self.flush()  # a deferred module has finished by the time anything else is imported
        if fullname not in self.hooks:
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
            if loader is not None and hasattr(loader, "exec_module") and not isinstance(loader, _HookLoader):
                spec.loader = _HookLoader(loader, self)
            return spec
        return None

    def invalidate_caches(self) -> None:  # importlib.invalidate_caches() calls this on every finder
        pass

    def __repr__(self) -> str:
        return f"<yolo_nonlocal post-import hooks for {sorted(self.hooks)}>"


def _finder(create: bool = True) -> _Finder | None:
    for f in sys.meta_path:
        if getattr(f, _MARKER, False) and hasattr(f, "hooks"):
            return f
    if not create:
        return None
    f = _Finder()
    sys.meta_path.insert(0, f)
    return f


def add_hook(name: str, key: str, callback, *, run_now: bool = True) -> None:
    """Call ``callback(module)`` each time module ``name`` finishes executing (import and every reload).

    ``key`` names the hook (adding the same key again replaces it: idempotent). With ``run_now`` the callback
    also runs at once if the module is already imported, or as soon as a half-imported one has finished.
    """
    if not isinstance(name, str) or not name or not isinstance(key, str) or not key:
        raise ValueError(f"add_hook: name and key must be non-empty strings, got {name!r}, {key!r}")
    if not callable(callback):
        raise TypeError(f"add_hook: callback must be callable, got {callback!r}")
    f = _finder()
    f.hooks.setdefault(name, {})[key] = callback
    if not run_now:
        return
    module = f.executing.get(name) or loaded(name)  # a hook of that module may be adding this one
    if module is not None:
        f.run(name, module, keys={key})
    elif name in sys.modules:
        f.deferred.add(name)


def remove_hook(name: str, key: str) -> None:
    """Remove one hook (no error if absent); the finder leaves :data:`sys.meta_path` with its last hook."""
    f = _finder(create=False)
    if f is None:
        return
    hooks = f.hooks.get(name, {})
    hooks.pop(key, None)
    if not hooks:
        f.hooks.pop(name, None)
        f.deferred.discard(name)
    if not f.hooks:
        sys.meta_path[:] = [x for x in sys.meta_path if x is not f]


def has_hook(name: str, key: str) -> bool:
    """Whether the hook ``key`` waits on module ``name``."""
    f = _finder(create=False)
    return f is not None and key in f.hooks.get(name, {})


def flush() -> None:
    """Run the hooks of deferred modules that have finished importing since (cheap when there are none)."""
    f = _finder(create=False)
    if f is not None:
        f.flush()


# ----------------------------------------------------------------------------------- reversible wrappers
def wrapper_key(obj) -> str | None:
    """The patch key of a wrapper installed by :func:`wrap`, or None for anything else."""
    return getattr(obj, _PATCH_KEY, None)


def wrap(owner, name: str, make, *, key: str) -> bool:
    """Replace ``owner.<name>`` (a function in a module's or a class's own namespace) by ``make(original)``.

    Idempotent per ``key``: an attribute that already is this patch's wrapper is left alone; returns whether
    a wrapper was installed. The wrapper carries ``__wrapped__`` (the original) and the patch key, so
    :func:`unwrap` can take it off; an attribute that is absent (another release) is skipped.
    """
    import functools

    current = vars(owner).get(name)
    if current is None or not callable(current):
        return False
    probe = current
    while probe is not None:  # ours anywhere in the chain (someone wrapped over it): re-enable, do not stack
        if getattr(probe, _PATCH_KEY, None) == key:
            setattr(probe, _DISABLED, False)
            return False
        probe = getattr(probe, "__wrapped__", None)
    inner = make(current)

    @functools.wraps(current)
    def wrapper(*args, **kwargs):
        if getattr(wrapper, _DISABLED, False):
            return current(*args, **kwargs)
        return inner(*args, **kwargs)

    setattr(wrapper, _PATCH_KEY, key)
    setattr(wrapper, _DISABLED, False)
    setattr(owner, name, wrapper)
    return True


def unwrap(owner, name: str, *, key: str) -> bool:
    """Take this patch's wrapper off ``owner.<name>``; returns whether one was found.

    On top: the original is put back. Under someone else's wrapper: it is switched off (it then calls
    straight through), since removing it would also remove theirs.
    """
    current = vars(owner).get(name)
    if getattr(current, _PATCH_KEY, None) == key:
        setattr(owner, name, current.__wrapped__)
        return True
    probe = getattr(current, "__wrapped__", None)
    while probe is not None:
        if getattr(probe, _PATCH_KEY, None) == key:
            setattr(probe, _DISABLED, True)
            return True
        probe = getattr(probe, "__wrapped__", None)
    return False


class Patch:
    """One reversible patch of one module: ``apply(module)`` and ``revert(module)``, both idempotent.

    ``apply`` runs when the module is (or already was) imported and again after every reload; ``revert``
    runs on uninstall for a loaded module.
    """

    __slots__ = ("module", "key", "apply", "revert")

    def __init__(self, module: str, key: str, apply, revert) -> None:
        self.module, self.key, self.apply, self.revert = module, key, apply, revert

    def __repr__(self) -> str:
        return f"Patch({self.module!r}, {self.key!r})"


def install_patches(patches) -> None:
    """Hook every patch on its module (applied now where the module is loaded, later where not)."""
    for p in patches:
        add_hook(p.module, p.key, p.apply)


def uninstall_patches(patches) -> None:
    """Remove the hooks of ``patches`` and revert them in the modules that are loaded (last patch first)."""
    for p in reversed(list(patches)):
        remove_hook(p.module, p.key)
        module = sys.modules.get(p.module)
        if module is not None:
            try:
                p.revert(module)
            except Exception as e:
                _warn(p.key + " (revert)", p.module, e)
