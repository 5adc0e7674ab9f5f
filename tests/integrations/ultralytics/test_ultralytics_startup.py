"""Registration with Ultralytics in fresh processes: the start-up hook, its laziness, and its failure modes.

Every check runs a new interpreter (as a DDP worker or the `yolo` command is), so what is tested is what
site-packages' start-up files do, not what this pytest process happens to have imported.
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SITE = REPO / "yolo_nonlocal" / "_site"


def run_py(code: str, cwd: Path, env_extra: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_import_package_is_light(tmp_path):
    """`import yolo_nonlocal` (and interpreter start with the hook) imports neither torch nor ultralytics."""
    r = run_py(
        """
        import sys
        at_start = sorted(m for m in ("torch", "ultralytics") if m in sys.modules)
        import yolo_nonlocal
        after = sorted(m for m in ("torch", "ultralytics") if m in sys.modules)
        finder = [f for f in sys.meta_path if getattr(f, "_yolo_nonlocal_import_hooks", False)]
        print(at_start, after, len(finder))
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "[] [] 1", r.stdout  # start-up file ran: exactly one finder, nothing heavy


def test_fresh_process_that_only_imports_ultralytics_is_registered(tmp_path):
    """A new process (a DDP worker, the `yolo` CLI) sees NonLocal in tasks' namespace and builds -nl YAMLs."""
    r = run_py(
        """
        import ultralytics.nn.tasks as tasks
        from ultralytics.nn.tasks import DetectionModel
        m = DetectionModel("yolov8n-nl.yaml", verbose=False)
        print(tasks.NonLocal.__module__, tasks.NonLocal.__name__, sum(type(x).__name__ == "NonLocal" for x in m.modules()))
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "yolo_nonlocal.nonlocal_block NonLocal 2"


def test_disable_env_and_explicit_register(tmp_path):
    """YOLO_NONLOCAL_NO_AUTOREGISTER=1 switches the hook off; yolo_nonlocal.register() still works, idempotently."""
    r = run_py(
        """
        import sys
        import ultralytics.nn.tasks as tasks
        before = hasattr(tasks, "NonLocal")
        import yolo_nonlocal
        yolo_nonlocal.register(); first = tasks.parse_model
        yolo_nonlocal.register(); second = tasks.parse_model
        print(before, hasattr(tasks, "NonLocal"), first is second, first.__wrapped__.__name__)
        """,
        tmp_path,
        {"YOLO_NONLOCAL_NO_AUTOREGISTER": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False True True parse_model"


def test_install_is_idempotent_and_registers_late(tmp_path):
    r = run_py(
        """
        import sys
        from yolo_nonlocal import _startup
        _startup.install(); _startup.install()
        n = sum(getattr(f, "_yolo_nonlocal_import_hooks", False) for f in sys.meta_path)
        import ultralytics.nn.tasks as tasks
        # the module object and its loader are the real ones, not the hook's proxy
        print(n, type(tasks.__loader__).__name__, type(tasks.__spec__.loader).__name__, hasattr(tasks, "NonLocal"))
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "1 SourceFileLoader SourceFileLoader True"


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "yolo_nonlocal"
    pkg.mkdir(parents=True)
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(textwrap.dedent(text))
    return root


@pytest.mark.parametrize(
    "files",
    [
        {"__init__.py": "raise RuntimeError('simulated broken install')\n"},
        {"__init__.py": "", "_startup.py": "def install(:\n"},  # syntax error
        {"__init__.py": "", "_startup.py": "def install():\n    raise OSError('disk gone')\n"},
    ],
    ids=["broken-package", "syntax-error", "install-raises"],
)
def test_broken_install_never_breaks_python_startup(tmp_path, files):
    """Whatever state the package is in, the interpreter starts and runs user code."""
    root = _fake_package(tmp_path / "shadow", files)
    r = run_py("print('alive')", tmp_path, {"PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "alive"


def test_failing_register_does_not_break_ultralytics(tmp_path):
    """A half-uninstalled integration warns once and leaves `import ultralytics` working."""
    root = _fake_package(
        tmp_path / "shadow",
        {
            "__init__.py": "",
            "integrations/__init__.py": "",
            "integrations/ultralytics/__init__.py": "",
            "integrations/ultralytics/registration.py": "raise ImportError('simulated half-uninstalled package')\n",
        },
    )
    shutil.copy(REPO / "yolo_nonlocal" / "_startup.py", root / "yolo_nonlocal" / "_startup.py")
    shutil.copy(REPO / "yolo_nonlocal" / "integrations" / "import_hooks.py",
                root / "yolo_nonlocal" / "integrations" / "import_hooks.py")
    r = run_py(
        """
        import ultralytics.nn.tasks as tasks
        from ultralytics import YOLO
        print('alive', hasattr(tasks, 'NonLocal'))
        """,
        tmp_path,
        {"PYTHONPATH": str(root)},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "alive False"
    assert "yolo-nonlocal: could not register NonLocal" in r.stderr
    assert "simulated half-uninstalled package" in r.stderr


def test_startup_files_are_well_formed_and_installed():
    """The .pth import line and the PEP 829 .start entry point both name the same no-argument callable."""
    from yolo_nonlocal import _startup

    start_lines = [
        ln.strip()
        for ln in (SITE / "yolo_nonlocal-autoregister.start").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert start_lines == ["yolo_nonlocal._startup:install"]
    assert pkgutil.resolve_name(start_lines[0]) is _startup.install  # PEP 829: pkg.mod:callable
    pth = (SITE / "yolo_nonlocal-autoregister.pth").read_text(encoding="utf-8").strip().splitlines()
    assert len(pth) == 1 and pth[0].startswith("import ") and "yolo_nonlocal._startup" in pth[0]
    assert "except Exception" in pth[0]
    # the environment under test has them at the site-packages root, byte for byte
    purelib = Path(sysconfig.get_paths()["purelib"])
    for name in ("yolo_nonlocal-autoregister.pth", "yolo_nonlocal-autoregister.start"):
        installed = purelib / name
        if not installed.exists():
            pytest.skip(f"{installed} is missing: run `pip install -e .` (make install) first")
        assert installed.read_bytes() == (SITE / name).read_bytes(), f"{installed} is stale: reinstall the package"
