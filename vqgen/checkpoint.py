"""Reading a component's weights: which file, read safely, renamed to vqgen's names, checked, assigned.

- safetensors are memory-mapped (copy-on-write) and wrapped without copying: a float32 model on
  the CPU runs straight from the page cache.
- pickled `.bin` files are read with `torch.load(weights_only=True)`, which refuses any pickle
  that would build objects other than tensors, so nothing in the file is ever executed.
- Every key and shape is checked against the module before anything is assigned.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import pickle
import re
import weakref
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError

# File stems per component: (safetensors stem, pickle stem).
DIFFUSERS_STEMS = ("diffusion_pytorch_model", "diffusion_pytorch_model")
TRANSFORMERS_STEMS = ("model", "pytorch_model")

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def weight_candidates(folder: Path, stems: tuple[str, str], dtype: torch.dtype) -> list[Path]:
    """Weight files to try, best first. float16 asks for the half-precision variants first (half the
    bytes to read); float32 and bfloat16 prefer full precision and fall back to upcast halves."""
    st, pt = stems
    full = [folder / f"{st}.safetensors", folder / f"{pt}.bin"]
    half = [folder / f"{st}.fp16.safetensors", folder / f"{pt}.fp16.bin"]
    return half + full if dtype == torch.float16 else full + half


def find_weights(folder: Path, stems: tuple[str, str], dtype: torch.dtype, component: str) -> Path:
    for path in weight_candidates(folder, stems, dtype):
        if path.is_file():
            return path
    names = ", ".join(p.name for p in weight_candidates(folder, stems, dtype))
    raise CheckpointError(f"{component}: no weight file in {folder} (looked for {names}); re-download the model")


# The mappings read_safetensors made: (start address, length, weak reference to the mmap), so that
# release() can find the pages behind a tensor.
_MAPPINGS: list[tuple[int, int, weakref.ref]] = []


def _register(mapped: mmap.mmap) -> None:
    _MAPPINGS[:] = [m for m in _MAPPINGS if m[2]() is not None]
    _MAPPINGS.append((ctypes.addressof(ctypes.c_char.from_buffer(mapped)), len(mapped), weakref.ref(mapped)))


def release(tensor: torch.Tensor) -> None:
    """Drop the resident pages of a memory-mapped weight once a converted copy (bf16, int8, a
    packed layout) replaces it, so converting a model never holds both in RAM. The mapping is
    private and never written, so a page touched again is simply read from the file again."""
    ptr, size = tensor.data_ptr(), tensor.numel() * tensor.element_size()
    for start, length, ref in _MAPPINGS:
        mapped = ref()
        if mapped is not None and start <= ptr < start + length:
            offset = (ptr - start) // mmap.PAGESIZE * mmap.PAGESIZE
            mapped.madvise(mmap.MADV_DONTNEED, offset, min(ptr - start + size, length) - offset)
            return


def read_safetensors(path: Path, component: str) -> dict[str, torch.Tensor]:
    """Memory-map a .safetensors file and return tensors that view the mapping (no copy)."""
    bad = f"{component}: {path} is truncated or corrupted; delete it and download the model again"
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(bad)
        header_len = int.from_bytes(prefix, "little")
        if header_len > min(size - 8, 100 << 20):
            raise CheckpointError(bad)
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(bad) from None
        # ACCESS_COPY: a private mapping, so tensors are writable without touching the file.
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size > 8 + header_len else None
    if not isinstance(header, dict):
        raise CheckpointError(bad)
    if mapped is not None:
        _register(mapped)
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(bad) from None
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        if start < 0 or end - start != numel * itemsize or base + end > size:
            raise CheckpointError(bad)
        if numel == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(mapped, dtype=dtype, count=numel, offset=base + start).view(shape)
    return tensors


def read_pickle(path: Path, component: str) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True: tensors and plain containers only, never code."""
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{component}: refused to load {path}: the pickle holds objects other than tensors "
            "(it could run code); use the model's .safetensors files instead"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{component}: {path} is truncated or corrupted ({str(e).splitlines()[0][:80]}); download the model again") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{component}: {path} does not hold a state dict of tensors")
    return data


def read_weights(path: Path, component: str) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return read_safetensors(path, component)
    return read_pickle(path, component)


def rename(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Apply regex rules in order to every key."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out = {}
    for key, value in state.items():
        for pattern, repl in compiled:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


# Published (diffusers) names -> vqgen's names.
TRANSFORMER_RULES = [
    (r"^latent_image_embedding\.emb\.", "token_embedding."),
    (r"^latent_image_embedding\.height_emb\.", "row_embedding."),
    (r"^latent_image_embedding\.width_emb\.", "col_embedding."),
    (r"^transformer_blocks\.", "blocks."),
    (r"\.norm([12])\.emb\.", r".norm\1.time."),
    (r"\.norm([12])\.linear\.", r".norm\1.proj."),
    (r"\.to_([qkv])\.", r".\1."),
    (r"\.to_out\.0\.", ".out."),
    (r"\.ff\.net\.0\.proj\.", ".ff.up."),
    (r"\.ff\.net\.2\.", ".ff.down."),
    (r"^out\.", "head."),
]

# Both the old VAE attention names (query/key/value/proj_attn, as in ITHQ's fp32 .bin) and the new.
VQVAE_RULES = [
    (r"\.attentions\.(\d+)\.group_norm\.", r".attentions.\1.norm."),
    (r"\.attentions\.(\d+)\.(?:query|to_q)\.", r".attentions.\1.q."),
    (r"\.attentions\.(\d+)\.(?:key|to_k)\.", r".attentions.\1.k."),
    (r"\.attentions\.(\d+)\.(?:value|to_v)\.", r".attentions.\1.v."),
    (r"\.attentions\.(\d+)\.(?:proj_attn|to_out\.0)\.", r".attentions.\1.out."),
    (r"\.conv_shortcut\.", ".shortcut."),
    (r"\.(?:upsamplers|downsamplers)\.0\.conv\.", ".conv."),
    (r"^quantize\.embedding\.", "codebook."),
]

# Old transformers saved CLIP keys under "text_model." and kept a position_ids buffer.
TEXT_RULES = [(r"^text_model\.", "")]
TEXT_IGNORED = {"embeddings.position_ids"}


def assign(module: nn.Module, state: dict[str, torch.Tensor], component: str, source: Path,
           device: torch.device, dtype, ignored: set[str] = frozenset()) -> None:
    """Check every key and shape against `module` (built on the meta device), then assign the
    tensors, cast to dtype on device (no copy where nothing changes). dtype may be a function of
    the key, returning None for "as stored"."""
    expected = module.state_dict()
    state = {k: v for k, v in state.items() if k not in ignored}
    missing = sorted(expected.keys() - state.keys())
    extra = sorted(state.keys() - expected.keys())
    if missing:
        raise CheckpointError(f"{component}: {source.name} lacks weight {missing[0]!r} ({len(missing)} missing); the file does not match config.json")
    if extra:
        raise CheckpointError(f"{component}: {source.name} has unexpected weight {extra[0]!r} ({len(extra)} unexpected); the file does not match config.json")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{component}: weight {key!r} in {source.name} has shape {tuple(state[key].shape)}, config.json implies {tuple(ref.shape)}"
            )
    cast = {}
    for key, value in state.items():
        wanted = dtype(key) if callable(dtype) else dtype
        target = (wanted or value.dtype) if value.is_floating_point() else value.dtype
        cast[key] = value.to(device=device, dtype=target)
        if cast[key].data_ptr() != value.data_ptr():
            release(value)  # a converted copy: the file's pages are no longer needed
    module.load_state_dict(cast, strict=True, assign=True)
