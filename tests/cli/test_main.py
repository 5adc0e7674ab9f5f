"""The `yolo-nonlocal` dispatcher: the command table, help, version, did-you-mean, the legacy aliases; and the
two entry points (the console script and ``python -m yolo_nonlocal``) once each through a real process."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from yolo_nonlocal import __version__
from yolo_nonlocal.cli import ALIASES, COMMANDS, main


def test_every_command_module_has_main():
    for name, (module, text) in COMMANDS.items():
        assert callable(importlib.import_module(module).main), name
        assert text


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"], ["help"]])
def test_help_lists_the_commands(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "usage: yolo-nonlocal COMMAND" in out and all(f"  {c}" in out for c in COMMANDS)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_unknown_command_suggests_and_exits_2(capsys):
    assert main(["compre"]) == 2
    assert "yolo-nonlocal: error: unknown command 'compre'; did you mean 'compare'?" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["compare", "attention", "usage", "demo"])
def test_each_tool_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: yolo-nonlocal {command} ")


def test_aliases_name_real_commands():
    assert all(target[0] in COMMANDS for target in ALIASES.values())


def test_console_script_smoke(console_script):
    r = subprocess.run([console_script, "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == __version__, r.stderr


def test_python_dash_m_smoke():
    r = subprocess.run([sys.executable, "-m", "yolo_nonlocal", "usage", "model=x.pt"], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 2 and r.stderr == "yolo-nonlocal usage: error: missing source=... (see --help)\n"
