"""fp32 pickles (`.bin`) -> safetensors, once per commit.

The published fp32 weights exist only as pickles. They are read once with weights_only=True
(checkpoint.read_pickle), written as safetensors under a temporary name, read back and compared
tensor by tensor, then renamed. The whole converted folder is built under a temporary name too and
renamed into vqgen's folder, `$HF_HOME/vqgen/models--org--name/<commit>/` (cache.vqgen_home), at
the end, so a folder with that name is always complete. Key names are kept as published: loader.py renames them itself.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import DISK_FULL, CheckpointError

# A pickle's stem -> the safetensors stem the loader looks for in the same folder.
SAFETENSORS_STEM = {"diffusion_pytorch_model": "diffusion_pytorch_model", "pytorch_model": "model"}


def converted_name(bin_name: str) -> str:
    stem = bin_name.removesuffix(".bin")
    return f"{SAFETENSORS_STEM.get(stem, stem)}.safetensors"


def _write_safetensors(tensors: dict, path: Path) -> None:
    """The one place converted bytes reach the disk (tests inject a full disk here)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt", "converted_by": "vqgen"})


def _own_storage(state: dict) -> dict:
    """safetensors refuses tensors that share memory or are not contiguous: give each its own copy
    where needed (a copy only for those; the rest are written straight from the mapped pickle)."""
    import torch

    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        ptr = value.untyped_storage().data_ptr() if value.numel() else None
        if ptr in seen or not value.is_contiguous():
            value = value.clone(memory_format=torch.contiguous_format)
        elif ptr is not None:
            seen.add(ptr)
        out[key] = value
    return out


def convert_pickle(src: Path, dst: Path, component: str) -> None:
    """One .bin -> one verified .safetensors at dst (atomic: dst exists only when verified)."""
    import torch

    from .checkpoint import read_pickle, read_safetensors

    state = _own_storage(read_pickle(src, component))
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        _write_safetensors(state, tmp)
        back = read_safetensors(tmp, component)
        if back.keys() != state.keys() or not all(
            back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v) for k, v in state.items()
        ):
            raise CheckpointError(f"{component}: the converted {dst.name} does not read back equal to {src.name}; check the disk, then run the download again")
        del back
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def convert_snapshot(snapshot: Path, files: list[str], dest: Path, on_component=None) -> None:
    """Build `dest` from the snapshot's `files`: pickles converted, fp32 safetensors linked, every
    other file (configs, tokenizer, model_index.json) copied so the folder stands on its own."""
    if dest.exists():
        return
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel in sorted(files, key=lambda r: r.endswith(".bin")):  # small files first
            src, out = snapshot / rel, tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith(".bin"):
                component = rel.split("/")[0]
                if on_component:
                    on_component(component, src.stat().st_size)
                convert_pickle(src, out.with_name(converted_name(out.name)), component)
            elif rel.endswith(".safetensors"):
                os.symlink(os.path.realpath(src), out)  # already safe and fp32: no second copy
            else:
                shutil.copyfile(src, out)
        os.rename(tmp, dest)
    except OSError as e:
        if e.errno in DISK_FULL:
            raise CheckpointError(f"disk full while converting to safetensors in {dest.parent}; free some space (or set HF_HOME, where vqgen keeps conversions, to a bigger disk) and run the download again") from None
        raise CheckpointError(f"cannot write the converted model to {dest.parent} ({e.strerror or e}); check the folder's permissions or set HF_HOME") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
