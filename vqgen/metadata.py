"""What an image says about itself: PNG text chunks written with it, and read back.

Two chunks:
- "parameters": the prompt, then one line of "Key: value" pairs, the convention other image
  generators use, so existing viewers show it;
- "vqgen": one JSON object with everything needed to make the same image again.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import __version__

PARAMETERS_KEY = "parameters"
JSON_KEY = "vqgen"


def image_record(pipe, prompt: str, seed: int, settings, edit=None) -> dict:
    """The reproducibility record of one image made by `pipe`; for an edit (an editing.EditInfo),
    also "edit": what it was made from (source and mask SHA-256) and the edit settings."""
    import torch
    import transformers

    width, height = pipe.image_size
    model = pipe.model
    return {
        "prompt": prompt,
        "seed": seed,
        "steps": settings.steps or pipe.num_timesteps,
        "schedule": settings.schedule,
        "sampler": settings.sampler,
        "purity_weight": settings.purity_weight if settings.sampler == "purity" else None,
        "guidance": settings.guidance,
        "truncation": settings.truncation,
        "width": width,
        "height": height,
        "model": model.name,
        "repo_id": model.repo_id,
        "revision": model.revision,
        "commit": model.commit,
        "precision": model.precision,
        "dtype": str(pipe.dtype).removeprefix("torch."),  # the transformer's
        "device": pipe.device.type,
        "mode": pipe.plan.mode,  # exact | fast | int8: with dtype and device, how to make it again
        "kernels": pipe.plan.describe(),
        "versions": {"vqgen": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        **({"edit": edit.record()} if edit is not None else {}),
    }


def parameters_text(record: dict) -> str:
    pairs = [
        ("Steps", record["steps"]),
        ("Schedule", record["schedule"]),
        ("Sampler", record["sampler"]),
        *([("Purity weight", record["purity_weight"])] if record.get("purity_weight") is not None else []),
        ("Guidance", record["guidance"]),
        ("Truncation", record["truncation"]),
        ("Seed", record["seed"]),
        ("Size", f"{record['width']}x{record['height']}"),
        ("Model", record["model"]),
        *([("Mode", record["mode"])] if record.get("mode") else []),
        *([("Model hash", record["commit"])] if record.get("commit") else []),
        *_edit_pairs(record.get("edit")),
        ("Version", f"vqgen {record['versions']['vqgen']}"),
    ]
    return record["prompt"] + "\n" + ", ".join(f"{k}: {v}" for k, v in pairs)


def _edit_pairs(edit: dict | None) -> list[tuple[str, object]]:
    if not edit:
        return []
    pairs = [("Edit", "inpainting" if edit.get("mask_sha256") or edit.get("region") else "variation"),
             ("Strength", edit.get("strength")), ("Source hash", str(edit.get("image_sha256", ""))[:12])]
    if edit.get("mask_sha256"):
        pairs.append(("Mask hash", edit["mask_sha256"][:12]))
    if edit.get("region"):
        pairs.append(("Region", ",".join(str(v) for v in edit["region"])))
    return pairs


def png_info(record: dict):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    # iTXt (UTF-8), so non-ASCII prompts survive intact.
    info.add_itxt(PARAMETERS_KEY, parameters_text(record))
    info.add_itxt(JSON_KEY, json.dumps(record, ensure_ascii=False, sort_keys=True))
    return info


def read_record(path: Path) -> dict | None:
    """The vqgen record of an image file, or None when it has none."""
    from PIL import Image

    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or {})
    if JSON_KEY in text:
        try:
            record = json.loads(text[JSON_KEY])
            if isinstance(record, dict):
                return record
        except json.JSONDecodeError:
            pass
    return None
