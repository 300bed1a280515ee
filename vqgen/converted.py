"""Converted transformer weights, made once and kept on disk.

Every mode but --exact converts the transformer's weights at load (kernels.convert_block): the
blocks' Linear weights to bfloat16 or to int8 codes and scales, q/k/v stacked, the feed-forward's
1.702 folded in, the AdaLayerNorms' timestep tables. For ITHQ that reads 5.4 GB of float32 and
takes seconds (more on slower CPUs), and the result is the same at every load. So the first load
writes it to one safetensors file in `vqgen_home()/converted/`, and later loads memory-map that
file (a half or a quarter of the float32 size) and only pack it for the kernels.

- The file name holds a hash of what the conversion was made from (`identity`): the weight file
  (real path, size, modification time: for a Hub model the path is the blob named by its content
  hash), the mode and dtype, and FORMAT, bumped whenever the conversion's arithmetic changes. The
  same identity is stored in the file's metadata and checked on reading, with the tensors' names
  and shapes, so a stale or foreign file is never used: the weights are converted again.
- Written block by block (never all converted weights in memory at once) to a temporary name, then
  renamed: a reader sees the whole file or none. Two processes converting at once (torchrun) each
  write their own temporary file; the last rename wins and both files are the same.
- Entries whose weight file is gone or changed are deleted whenever a new entry is written.
- Small models (under MIN_PARAMETERS) convert in milliseconds and are never cached; a plan whose
  conversion is cheap is not cached either (kernels.caches_conversion).
- Off with `VQGEN_CONVERTED_CACHE=0` or `Pipeline.from_folder(..., cache_converted=False)`. A folder
  that cannot be written (read-only, disk full) means converting at every load, after a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import kernels
from .cache import _truthy, converted_weights_dir, prune_converted, safetensors_metadata
from .checkpoint import SAFETENSORS_DTYPES, read_safetensors, release
from .errors import CheckpointError

FORMAT = 1  # bump when convert_block's arithmetic or names change: older files are then ignored
MIN_PARAMETERS = 100_000_000  # ITHQ's transformer has 1.36e9; the bundled shapes model 4e6
ENV = "VQGEN_CONVERTED_CACHE"
_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}  # what the header calls each dtype


@dataclass(frozen=True)
class Converted:
    """What the load did with the converted weights, for --verbose and the caller."""

    action: str  # "none" (exact), "converted" (in memory), "read" (from path), "written" (to path, then read)
    path: Path | None = None
    warning: str | None = None

    def describe(self) -> str | None:
        if self.action == "read":
            return f"converted weights read from {self.path}"
        if self.action == "written":
            size = self.path.stat().st_size / 1e9 if self.path.exists() else 0
            return f"converted weights written to {self.path} ({size:.1f} GB; later loads read them; {ENV}=0 turns this off)"
        return None


def enabled(requested: bool | None) -> bool:
    """The argument when given, else the environment (on unless VQGEN_CONVERTED_CACHE is 0/false/no/off)."""
    if requested is not None:
        return requested
    value = os.environ.get(ENV)
    return value is None or value.strip() == "" or _truthy(value)


def identity(source: Path, plan: kernels.Plan) -> dict[str, str]:
    """What a converted file was made from (all strings: safetensors metadata)."""
    stat = source.stat()
    return {"vqgen_converted": str(FORMAT), "source": os.path.realpath(source), "size": str(stat.st_size),
            "mtime_ns": str(stat.st_mtime_ns), "mode": plan.mode, "linear": plan.linear,
            "dtype": str(plan.transformer_dtype).removeprefix("torch.")}


def entry_path(ident: dict[str, str]) -> Path:
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
    return converted_weights_dir() / f"transformer-{ident['mode']}-{ident['dtype']}-{digest}.safetensors"


def converted_weights(transformer: nn.Module, plan: kernels.Plan, source: Path, requested: bool | None = None):
    """(blocks, Converted): blocks(i) gives block i's kernels.convert_block tensors, read from the
    cache (written first if absent); None when apply_plan should convert in memory."""
    if plan.exact:
        return None, Converted("none")
    parameters = sum(p.numel() for p in transformer.parameters())  # memory-mapped: nothing is read
    if not (enabled(requested) and kernels.caches_conversion(plan) and parameters >= MIN_PARAMETERS):
        return None, Converted("converted")
    ident = identity(source, plan)
    path = entry_path(ident)
    blocks = _open(path, ident, len(transformer.blocks))
    if blocks is not None:
        return blocks, Converted("read", path)
    try:
        _write(path, ident, transformer, plan)
        prune_converted(keep=path, format_version=str(FORMAT))
    except OSError as e:
        reason = e.strerror or str(e)
        return None, Converted("converted", warning=f"could not keep the converted weights in {converted_weights_dir()} ({reason}); "
                                                    f"they are converted again at every load ({ENV}=0 skips trying)")
    blocks = _open(path, ident, len(transformer.blocks))
    if blocks is None:  # written but unreadable: convert in memory rather than fail
        return None, Converted("converted", warning=f"the converted weights written to {path} could not be read back")
    return blocks, Converted("written", path)


def _open(path: Path, ident: dict[str, str], num_blocks: int):
    """blocks(i) over a cached file, or None (and the file deleted) if it is absent, stale or broken."""
    if not path.is_file():
        return None
    try:
        tensors = read_safetensors(path, "converted transformer")
        if safetensors_metadata(path) != ident:
            raise CheckpointError("identity differs")
        first = {k.removeprefix("blocks.0."): v for k, v in tensors.items() if k.startswith("blocks.0.")}
        expected = {f"blocks.{i}.{k}": (v.dtype, v.shape) for i in range(num_blocks) for k, v in first.items()}
        if {k: (v.dtype, v.shape) for k, v in tensors.items()} != expected:
            raise CheckpointError("tensors differ")
    except (CheckpointError, OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    return lambda i: {k: tensors[f"blocks.{i}.{k}"] for k in first}


@torch.no_grad()
def _write(path: Path, ident: dict[str, str], transformer: nn.Module, plan: kernels.Plan) -> None:
    """A safetensors file of every block's convert_block tensors, converted and written one block at
    a time (the source weights' pages released behind each block), under a temporary name, then
    renamed into place. Block 0 is converted first: its names, dtypes and shapes are every block's,
    so the header is written before the data."""
    blocks = transformer.blocks

    def convert(i: int) -> dict[str, torch.Tensor]:
        tensors = kernels.convert_block(blocks[i], plan)
        for weight in kernels.replaced_weights(blocks[i], plan):
            release(weight)
        return tensors

    first = convert(0)
    template = {k: (v.dtype, tuple(v.shape), v.numel() * v.element_size()) for k, v in first.items()}
    header, offset = {}, 0
    for i in range(len(blocks)):
        for k, (dtype, shape, nbytes) in template.items():
            header[f"blocks.{i}.{k}"] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
    header["__metadata__"] = ident
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(path.parent).free < offset + (1 << 30):  # keep a gigabyte for everything else
        raise OSError(28, f"not enough free disk space for {offset / 1e9:.1f} GB")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for i in range(len(blocks)):
                tensors = first if i == 0 else convert(i)
                for k, (dtype, shape, _) in template.items():
                    tensor = tensors[k]
                    if tensor.dtype != dtype or tuple(tensor.shape) != shape:
                        raise ValueError(f"block {i}'s {k} differs from block 0's")
                    f.write(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
                first = tensors = None  # freed before the next block is converted
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
