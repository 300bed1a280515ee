"""Choosing the device and dtype a user asked for, with one-line errors (SettingError) when it cannot be had."""

from __future__ import annotations

import torch

from .errors import SettingError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str | torch.device) -> torch.device:
    name = str(name)
    kind = name.split(":")[0]
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise SettingError("device", name, "cpu (or auto)", "device {value!r} is not available: this PyTorch sees no CUDA GPU; use {name} {allowed}")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise SettingError("device", name, f"cuda:0..cuda:{count - 1}", f"device {{value!r}} is not available: only {count} CUDA device(s); pick one of them")
        return torch.device(name)
    if kind == "mps":
        if not _mps_available():
            raise SettingError("device", name, "cpu (or auto)", "device {value!r} is not available on this machine; use {name} {allowed}")
        return torch.device("mps")
    if kind == "cpu":
        return torch.device("cpu")
    raise SettingError("device", name, f"{', '.join(DEVICES)} (or cuda:N)", "unknown device {value!r}; use one of {allowed}")


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None picks float32 on the CPU (half precision is slow there) and float16 on accelerators."""
    if isinstance(name, torch.dtype):
        return name
    if name is None:
        return torch.float32 if device.type == "cpu" else torch.float16
    if name not in DTYPES:
        raise SettingError("dtype", name, ", ".join(DTYPES), "unknown dtype {value!r}; use one of {allowed}")
    return DTYPES[name]
