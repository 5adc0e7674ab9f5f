"""Where a measurement came from: platform, CPU, accelerator and package versions, in one place.

Every benchmark and every ``compare`` report names its machine with these, so numbers can be traced.
Imports torch lazily (and only to read versions and devices); never imports Ultralytics unless installed.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable

__all__ = ["cpu_name", "machine_info", "describe_machine"]

DEFAULT_PACKAGES = ("torch", "ultralytics")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions(packages: Iterable[str]) -> dict[str, str]:
    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def machine_info(device: Any = None, packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, Any]:
    """Platform, Python, CPU (and the vector ISA torch dispatches to), torch threads, package versions, the device
    used and its accelerator name.

    ``device`` is a torch device, a device string (``"cpu"``, ``"cuda:0"``, ``"0"``) or None (cpu).
    """
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = round(os.getloadavg()[0], 2)
    info.update(_versions(packages))
    if "torch" in info and info["torch"] != "missing":
        import torch

        info["torch"] = torch.__version__  # with its build tag (+cpu, +cu130)
        info["torch_threads"] = torch.get_num_threads()
        try:  # the vector ISA torch's CPU kernels dispatch to (AVX512, AVX2, ...): it sets the CPU's speed ratios
            info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        except (AttributeError, RuntimeError):  # torch < 2.0
            pass
        dev = torch.device("cpu" if device in (None, "") else f"cuda:{device}" if str(device).isdigit() else device)
        info["device"] = str(dev)
        if dev.type == "cuda":
            info["accelerator"] = torch.cuda.get_device_name(dev)
    return info


def describe_machine(device: Any = None, packages: Iterable[str] = DEFAULT_PACKAGES) -> str:
    """One line for a benchmark's header, e.g. ``NVIDIA H100 | AMD EPYC, 16 CPUs | Linux-6.1 | torch 2.11``."""
    info = machine_info(device, packages)
    parts = [info["accelerator"]] if "accelerator" in info else []
    cpu = f"{info['cpu']}, {info['cpu_count']} CPUs"
    if "cpu_capability" in info:
        cpu += f", {info['cpu_capability']}"
    if "torch_threads" in info:
        cpu += f" ({info['torch_threads']} torch threads)"
    if "load_average" in info:
        cpu += f", load average {info['load_average']:.1f}"
    parts += [cpu, info["platform"], f"Python {info['python']}"]
    parts += [f"{name} {info[name]}" for name in packages]
    return " | ".join(parts)
