"""yolo_nonlocal.utils.machine: a benchmark header names what sets the CPU's speed ratios (its vector ISA)."""

from __future__ import annotations

import subprocess
import sys

import torch

from yolo_nonlocal.utils.machine import describe_machine, machine_info


def test_header_names_the_cpu_isa_torch_dispatches_to():
    info = machine_info()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    line = describe_machine()
    assert f"{info['cpu_count']} CPUs, {info['cpu_capability']} (" in line and f"torch {torch.__version__}" in line


def test_the_isa_follows_atens_override():
    """ATEN_CPU_CAPABILITY=default makes torch use its scalar kernels: the header must say so, not the CPU's best."""
    code = "from yolo_nonlocal.utils.machine import machine_info; print(machine_info()['cpu_capability'])"
    out = subprocess.run([sys.executable, "-c", code], env={"ATEN_CPU_CAPABILITY": "default", "PATH": ""},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["DEFAULT"]
