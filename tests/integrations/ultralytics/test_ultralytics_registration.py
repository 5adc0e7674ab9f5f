"""register() / unregister() and the one post-import hook mechanism (issue 13), against the real Ultralytics.

Each Ultralytics-level check runs in a fresh interpreter, as the `yolo` command or a DDP worker does, so it
sees what the start-up hook and the patches really do, including after ``importlib.reload``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest

from yolo_nonlocal.integrations import import_hooks


def run_py(code: str, tmp_path, **env) -> str:
    environ = {**os.environ, **env}
    environ.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout.strip().splitlines()[-1]


STATE = """
import sys
from yolo_nonlocal.integrations.import_hooks import wrapper_key as key
def state():
    t = sys.modules["ultralytics.nn.tasks"]
    import ultralytics.utils.torch_utils as tu, ultralytics.engine.trainer as tr
    import ultralytics.models.yolo.detect.val as dv, ultralytics.utils.callbacks.base as cb
    import torch.serialization as ser
    from yolo_nonlocal.nonlocal_block import NonLocal
    from yolo_nonlocal.integrations.ultralytics.checkpoints import export_guard
    return dict(
        names="NonLocal" in vars(t), parse=key(t.parse_model), yaml=key(t.check_yaml), load=key(t.BaseModel.load),
        flops=key(tu.get_flops), opt=key(tr.BaseTrainer.build_optimizer), csv=key(tr.BaseTrainer.save_metrics),
        val=key(dv.DetectionValidator.get_stats), guard=export_guard in cb.default_callbacks["on_export_start"],
        safe=NonLocal in ser.get_safe_globals(),
        finders=sum(getattr(f, "_yolo_nonlocal_import_hooks", False) for f in sys.meta_path))
def on(s):
    return s["names"] and s["guard"] and s["safe"] and None not in (s["parse"], s["yaml"], s["load"], s["flops"],
                                                                    s["opt"], s["csv"], s["val"])
def off(s):
    return not (s["names"] or s["guard"] or s["safe"]) and {s[k] for k in ("parse", "yaml", "load", "flops", "opt",
                                                                            "csv", "val")} == {None}
"""


def test_every_patch_survives_a_reload_of_its_module(tmp_path):
    """importlib.reload re-runs a module body and drops every wrapper: the hooks re-apply them (issue 13)."""
    out = run_py(
        STATE
        + """
import importlib
import ultralytics.nn.tasks as tasks, ultralytics.engine.trainer as tr, ultralytics.models.yolo.detect.val as dv
import ultralytics.utils.torch_utils as tu
assert on(state()), state()
old_base = tasks.BaseModel
for m in (tasks, tr, dv, tu):
    importlib.reload(m)
assert tasks.BaseModel is not old_base  # a new class: its load had to be wrapped again
s = state()
assert on(s) and s["finders"] == 1, s
m = tasks.DetectionModel("yolov8n-nl.yaml", verbose=False)  # NonLocal rows build after the reload
assert sum(type(x).__name__ == "NonLocal" for x in m.modules()) == 2
assert key(tasks.parse_model.__wrapped__) is None  # re-wrapped once, not stacked
print("ok")
""",
        tmp_path,
    )
    assert out == "ok"


def test_unregister_takes_every_patch_off_and_register_puts_them_back(tmp_path):
    out = run_py(
        STATE
        + """
import importlib
import yolo_nonlocal
import ultralytics.nn.tasks as tasks
import ultralytics.engine.trainer, ultralytics.models.yolo.detect.val
yolo_nonlocal.unregister(); yolo_nonlocal.unregister()
s = state()
assert off(s), s
importlib.reload(tasks)  # the start-up hook is gone too: a reload does not re-register
assert off(state()), state()
try:
    tasks.DetectionModel("yolov8n-nl.yaml", verbose=False)
except FileNotFoundError:
    pass
else:
    raise AssertionError("a -nl YAML still resolved after unregister()")
yolo_nonlocal.register(); yolo_nonlocal.register()
s = state()
assert on(s), s
assert key(tasks.parse_model.__wrapped__) is None and key(tasks.BaseModel.load.__wrapped__) is None  # once, not twice
tasks.DetectionModel("yolov8n-nl.yaml", verbose=False)
from yolo_nonlocal.integrations.ultralytics import registration
assert registration.is_registered()
print("ok")
""",
        tmp_path,
    )
    assert out == "ok"


def test_version_gate_names_the_supported_releases(tmp_path):
    from yolo_nonlocal.integrations.ultralytics import registration as reg

    assert reg.check_version("8.3.0") == "8.3.0" and reg.check_version("8.4.190") == "8.4.190"
    assert reg.check_version("9.0.0rc1") == "9.0.0rc1"
    with pytest.raises(reg.UnsupportedUltralyticsError, match=r"8\.2\.103 is older.*ultralytics>=8\.3\.0 for the "
                                                              r"YOLOv8 and YOLO11 YAMLs, >=8\.4\.0 for the YOLO26"):
        reg.check_version("8.2.103")
    # register() refuses an unsupported release; through the start-up hook that is one warning line and a
    # working Ultralytics
    out = run_py(
        """
import contextlib, io
import ultralytics
import ultralytics.nn.tasks as tasks
ultralytics.__version__ = "8.2.0"
import yolo_nonlocal
from yolo_nonlocal import _startup
try:
    yolo_nonlocal.register()
except yolo_nonlocal.integrations.ultralytics.registration.UnsupportedUltralyticsError as e:
    assert "8.2.0 is older" in str(e), e
else:
    raise AssertionError("8.2.0 accepted")
err = io.StringIO()
with contextlib.redirect_stderr(err):
    _startup._register_now()
assert "WARNING yolo-nonlocal: could not register" in err.getvalue() and "8.3.0" in err.getvalue(), err.getvalue()
print("NonLocal" in vars(tasks))
""",
        tmp_path,
        YOLO_NONLOCAL_NO_AUTOREGISTER="1",
    )
    assert out == "False"


# ------------------------------------------------------------------------------ the hook mechanism itself
@pytest.fixture
def fake_modules(tmp_path, monkeypatch):
    (tmp_path / "nlhook_a.py").write_text("import nlhook_b\nVALUE = 1\ndef f():\n    return 'a'\n")
    (tmp_path / "nlhook_b.py").write_text("HOOKED_A_DURING_IMPORT = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("nlhook_a", "nlhook_b", "nlhook_c"):
        sys.modules.pop(name, None)
        for key in ("t1", "t2", "t3"):
            import_hooks.remove_hook(name, key)


def test_hook_runs_on_import_on_reload_and_not_after_removal(fake_modules):
    seen = []
    import_hooks.add_hook("nlhook_a", "t1", lambda m: seen.append(m.VALUE))
    assert seen == []  # not imported yet: nothing imported by the hook itself
    assert "nlhook_a" not in sys.modules
    import nlhook_a

    assert seen == [1]
    assert type(nlhook_a.__loader__).__name__ == "SourceFileLoader"  # the real loader, not the proxy
    importlib.reload(nlhook_a)
    assert seen == [1, 1]
    import_hooks.add_hook("nlhook_a", "t1", lambda m: seen.append("again"))  # same key: replaced, run now
    assert seen == [1, 1, "again"]
    import_hooks.remove_hook("nlhook_a", "t1")
    importlib.reload(nlhook_a)
    assert seen == [1, 1, "again"]


def test_a_half_imported_module_is_patched_once_it_has_finished(fake_modules):
    """A hook added while its module is half-way through its import (as register() runs inside Ultralytics'
    import chain) fires as soon as the module has finished, at the next import or flush()."""
    seen = []
    (fake_modules / "nlhook_b.py").write_text(
        "import sys\nfrom yolo_nonlocal.integrations import import_hooks\n"
        "assert 'nlhook_a' in sys.modules and not hasattr(sys.modules['nlhook_a'], 'VALUE')\n"
        "import_hooks.add_hook('nlhook_a', 't2', lambda m: SEEN.append(m.VALUE))\nSEEN = []\n"
    )
    import nlhook_a
    import nlhook_b

    seen = nlhook_b.SEEN
    assert seen == []  # deferred: nlhook_a had no VALUE yet when the hook was added
    import_hooks.flush()
    assert seen == [1]
    import_hooks.flush()
    assert seen == [1]  # once
    importlib.reload(nlhook_a)
    assert seen == [1, 1]


def test_a_failing_hook_warns_and_never_breaks_the_import(fake_modules, capsys):
    def boom(module):
        raise RuntimeError("simulated")

    import_hooks.add_hook("nlhook_a", "t3", boom)
    import nlhook_a

    assert nlhook_a.f() == "a"
    assert "the hook 't3' on nlhook_a failed (RuntimeError: simulated)" in capsys.readouterr().err


def test_wrap_is_idempotent_and_unwrap_restores_or_switches_off(fake_modules):
    import nlhook_a

    original = nlhook_a.f
    make = lambda orig: (lambda: orig() + "+ours")  # noqa: E731
    assert import_hooks.wrap(nlhook_a, "f", make, key="t1")
    assert not import_hooks.wrap(nlhook_a, "f", make, key="t1")  # already there: not stacked
    assert nlhook_a.f() == "a+ours" and nlhook_a.f.__wrapped__ is original
    assert import_hooks.unwrap(nlhook_a, "f", key="t1") and nlhook_a.f is original
    # someone wraps over ours: unwrap switches ours off instead of removing theirs, wrap switches it on again
    import_hooks.wrap(nlhook_a, "f", make, key="t1")
    ours = nlhook_a.f

    def theirs():
        return ours() + "+theirs"

    theirs.__wrapped__ = ours
    nlhook_a.f = theirs
    assert nlhook_a.f() == "a+ours+theirs"
    assert import_hooks.unwrap(nlhook_a, "f", key="t1")
    assert nlhook_a.f() == "a+theirs"
    assert not import_hooks.wrap(nlhook_a, "f", make, key="t1")
    assert nlhook_a.f() == "a+ours+theirs"
    assert not import_hooks.wrap(nlhook_a, "missing", make, key="t1")  # absent on this release: skipped
