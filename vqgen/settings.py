"""Every setting of a generation decided in one place, and checked in one place.

A value comes from the first of these layers that has it (None: "not given"):
  1. given:       what the caller passed: the command line, or a Python call's keyword arguments;
  2. image:       the record of a vqgen image (`--from-image`), see record_layer;
  3. model:       what the model recommends over vqgen's defaults: vqgen.json beside its
                  model_index.json, {"recommended": {"steps": 25, "guidance": 1.0, ...}};
  4. default:     defaults.py.
resolve() returns the values with the layer each came from (`vqgen --verbose` shows them), after
checking every value with check(); batch prompt lines and `vqgen edit` go through the same two.
Errors are SettingError: the setting's name, its value and what is allowed, in plain words.
Nothing here imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from . import defaults as _defaults
from .errors import CheckpointError, SettingError
from .layout import VQGEN_FILE

SCHEDULES = ("strided", "diffusers")  # schedule.timesteps_for says what each does
SAMPLERS = ("posterior", "purity")
FITS = ("crop", "pad", "stretch")  # how an edit's source image is fitted to the model's size (editing.py)


@dataclass
class Settings:
    """What decides an image besides the prompt and the seed. Defaults live in defaults.py."""

    steps: int | None = _defaults.STEPS
    guidance: float = _defaults.GUIDANCE
    truncation: float = _defaults.TRUNCATION
    schedule: str = _defaults.SCHEDULE
    sampler: str = _defaults.SAMPLER
    purity_weight: float = _defaults.PURITY_WEIGHT

    def validate(self, chain=None) -> None:
        """SettingError for values no model accepts; with the model's usable chain known (a
        schedule.Chain, or its length), also for steps beyond it."""
        for f in fields(self):
            check(f.name, getattr(self, f.name), chain)


SETTINGS = tuple(f.name for f in fields(Settings))

# Everything a generation is decided by, with defaults.py's value: the Settings, and what picks
# the model, the images and the kernels.
DEFAULTS: dict = {
    "model": _defaults.MODEL, "revision": None, "prompt": None, "seed": None, "num_images": _defaults.NUM_IMAGES,
    **{f.name: f.default for f in fields(Settings)},
    "device": _defaults.DEVICE, "dtype": _defaults.DTYPE, "exact": _defaults.EXACT, "quantize": _defaults.QUANTIZE,
}

# What an edit adds (vqgen edit, Pipeline.edit; editing.py): resolved like every other setting.
EDIT_DEFAULTS: dict = {
    "strength": _defaults.EDIT_STRENGTH, "grow": _defaults.EDIT_GROW, "fit": _defaults.EDIT_FIT,
    "paste": _defaults.EDIT_PASTE, "region": None,
}

GIVEN, IMAGE, MODEL, DEFAULT = "given", "image", "model", "default"


def _chain(chain):
    if isinstance(chain, int):
        from .schedule import Chain

        return Chain(chain, chain)
    return chain


def check(name: str, value, chain=None) -> None:
    """SettingError when `value` is not allowed for setting `name` (names without a rule pass).
    chain: the model's usable chain (schedule.Chain or its length), when known, bounds steps."""
    if value is None:
        return
    if name == "steps":
        chain = _chain(chain)
        if value < 1:
            raise SettingError(name, value, "at least 1 (the model's chain length at most)")
        if chain is not None and value > chain.length:
            why = chain.describe().replace("{", "{{").replace("}", "}}")
            raise SettingError(name, value, f"1..{chain.length}", "{name} {value} is out of range: " + why + "; use {allowed}")
    elif name == "truncation":
        if not 0 < value <= 1:
            raise SettingError(name, value, "a value in (0, 1], e.g. 0.86 or 1.0")
    elif name == "guidance":
        if not value >= 0:
            raise SettingError(name, value, "0 or more (1 turns guidance off, 5 is the default)", "{name} {value} is negative; use {allowed}")
    elif name == "purity_weight":
        if not value >= 0:
            raise SettingError(name, value, "0 or more (1 is the published choice)", "{name} {value} is negative; use {allowed}")
    elif name in ("schedule", "sampler"):
        known = SCHEDULES if name == "schedule" else SAMPLERS
        if value not in known:
            raise SettingError(name, value, ", ".join(known), "unknown " + name + " {value!r}; use one of {allowed}")
    elif name == "strength":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise SettingError(name, value, "a value in (0, 1] (1 repaints from the mask token, 0.3 keeps most of the image)")
    elif name == "grow":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SettingError(name, value, "a whole number of tokens, 0 or more")
    elif name == "fit":
        if value not in FITS:
            raise SettingError(name, value, ", ".join(FITS), "unknown " + name + " {value!r}; use one of {allowed}")
    elif name == "num_images":
        if value < 1:
            raise SettingError(name, value, "at least 1", "{name} {value}: the number of images must be at least 1")


@dataclass(frozen=True)
class Resolved:
    """The final value of every setting, and the layer it came from (GIVEN, IMAGE, MODEL, DEFAULT)."""

    values: dict
    sources: dict = field(default_factory=dict)

    def __getitem__(self, name: str):
        return self.values[name]

    @property
    def settings(self) -> Settings:
        return Settings(**{name: self.values[name] for name in SETTINGS})

    def describe(self, names=SETTINGS, labels: dict | None = None, spelling: dict | None = None) -> str:
        """One line, e.g. "steps 25 (model), guidance 1.0 (model), sampler posterior (default)";
        labels renames the layers (the CLI says "command line" and "--from-image"), spelling the
        settings (the CLI's flags)."""
        labels, spelling = labels or {}, spelling or {}
        shown = ("whole chain" if self.values[n] is None and n == "steps" else self.values[n] for n in names)
        return ", ".join(f"{spelling.get(n, n)} {v} ({labels.get(self.sources[n], self.sources[n])})" for n, v in zip(names, shown))


def resolve(given: dict, record: dict | None = None, recommended: dict | None = None, fallback: dict | None = None,
            *, chain=None) -> Resolved:
    """The final settings: given > record (of a vqgen image) > recommended (by the model) >
    fallback (defaults.py's DEFAULTS), None meaning "not in this layer"; every value checked
    (steps against `chain` when given). A mode (exact or quantize) given by the caller replaces
    the recorded mode and its dtype: they were chosen together."""
    record = dict(record or {})
    if given.get("exact") is not None or given.get("quantize") is not None:
        for name in ("exact", "quantize", "dtype"):
            record.pop(name, None)
    layers = [(GIVEN, given), (IMAGE, record), (MODEL, recommended or {}), (DEFAULT, DEFAULTS if fallback is None else fallback)]
    values, sources = {}, {}
    for name in dict.fromkeys(k for _, layer in layers for k in layer):
        for source, layer in layers:
            if layer.get(name) is not None:
                values[name], sources[name] = layer[name], source
                break
        else:
            values[name], sources[name] = None, DEFAULT
    for name, value in values.items():
        check(name, value, chain)
    return Resolved(values, sources)


# -- the layers -----------------------------------------------------------------------------------

# What a vqgen image's record restores (record key = setting name).
RECORD_KEYS = ("model", "revision", "steps", "guidance", "truncation", "schedule", "sampler", "purity_weight", "seed", "dtype")


def record_layer(record: dict) -> dict:
    """The settings a vqgen image's record (metadata.read_record) holds, as a resolve() layer:
    its model (the Hub repo at the very commit, when it came from the Hub), prompt, seed, settings
    and kernel mode. Records from before modes existed were made with the exact arithmetic."""
    layer = {key: record[key] for key in RECORD_KEYS if record.get(key) is not None}
    if record.get("repo_id"):
        layer["model"] = record["repo_id"]
        layer["revision"] = record.get("commit") or record.get("revision")
    mode = record.get("mode", "exact")
    layer["exact"], layer["quantize"] = mode == "exact", (mode if mode in ("int8",) else None)
    layer["prompt"] = record.get("prompt")
    return layer


def edit_record_layer(record: dict) -> dict:
    """The edit settings of an edited image's record (its "edit" object), as a resolve() layer."""
    edit = record.get("edit") if isinstance(record.get("edit"), dict) else {}
    layer = {key: edit.get(key) for key in EDIT_DEFAULTS if edit.get(key) is not None}
    if "region" in layer:
        layer["region"] = tuple(layer["region"])
    return layer


_KINDS = {"steps": (int,), "guidance": (int, float), "truncation": (int, float), "purity_weight": (int, float),
          "schedule": (str,), "sampler": (str,)}


def model_recommended(folder: str | Path) -> dict:
    """The settings a model folder recommends (its vqgen.json), checked; {} when it has none.
    Any model can carry them: the bundled shapes model does, a Hub repo may."""
    path = Path(folder) / VQGEN_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read it ({e}); fix or remove the file") from None
    recommended = data.get("recommended", {}) if isinstance(data, dict) else None
    if not isinstance(recommended, dict):
        raise CheckpointError(f"{path}: expected {{\"recommended\": {{\"steps\": 25, ...}}}}; fix or remove the file")
    for name, value in recommended.items():
        kinds = _KINDS.get(name)
        if kinds is None:
            raise CheckpointError(f"{path}: unknown setting {name!r}; it may recommend {', '.join(_KINDS)}")
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise CheckpointError(f"{path}: {name} {json.dumps(value)} is not a {'whole number' if kinds == (int,) else 'number' if int in kinds else 'string'}")
        try:
            check(name, value)
        except SettingError as e:
            raise CheckpointError(f"{path}: {e}") from None
    return {name: float(v) if int in _KINDS[name] and float in _KINDS[name] else v for name, v in recommended.items()}
