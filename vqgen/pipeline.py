"""Text -> image: the generation loop over the loaded components.

    pipe = vqgen.load("path/or/repo-id")
    result = pipe("a red bus", seed=42, num_images=2)   # result.images: PIL images, result.seeds

Image i of a call uses seed + i (or seeds[i]) and its own random generator, so every image can be
reproduced alone and equals what the reference makes for that seed with batch size one; for the
same reason a call of any size runs in chunks (defaults.CHUNK_SIZE images per network run) without
changing an image. Progress goes to callbacks (on_step, on_images) and to an Events object
(vqgen.events); nothing here prints.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import defaults
from .device import resolve_device, resolve_dtype
from .errors import SettingError
from .events import NO_EVENTS, Events
from .kernels import Plan, plan_for
from .layout import ResolvedModel
from .loader import Components, load_components
from .sampling import apply_guidance, gumbel_sample, posterior_logits, purity_step, truncate
from .schedule import Chain, timesteps_for, timesteps_from
from .settings import SAMPLERS, SETTINGS, Resolved, Settings, check, model_recommended, resolve  # noqa: F401 (SAMPLERS: API)
from .vqvae import to_uint8

StepCallback = Callable[[int, int], None]  # (steps done, total steps) of one network run


def random_seed() -> int:
    return secrets.randbits(32)


@dataclass
class Generation:
    images: list  # PIL images
    seeds: list[int]
    prompts: list[str]
    settings: Settings
    timesteps: list[int]
    warnings: list[str] = field(default_factory=list)
    edits: list | None = None  # for an edit: one editing.EditInfo per image


ImagesCallback = Callable[[int, "Generation"], None]  # (index of the chunk's first image, the chunk)


class Pipeline:
    def __init__(self, components: Components, plan: Plan, model: ResolvedModel):
        self.c, self.plan, self.model = components, plan, model
        self.device = plan.device
        self.dtype = plan.transformer_dtype  # what the network runs in; the sampler is float32
        self.warnings = list(plan.warnings)  # about the setup (a slow dtype, ...), for the caller to show
        if components.converted.warning:
            self.warnings.append(components.converted.warning)
        self.recommended = model_recommended(model.path)  # the model's own settings (its vqgen.json)

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = defaults.DEVICE, dtype: str | torch.dtype | None = defaults.DTYPE,
                    resolved: ResolvedModel | None = None, *, exact: bool = defaults.EXACT,
                    quantize: str | None = defaults.QUANTIZE, cache_converted: bool | None = None) -> Pipeline:
        """Load a model folder. exact: the reference's arithmetic, bit for bit (else the fastest
        faithful kernels for the device, kernels.py); quantize="int8": int8 Linear layers (CPU).
        cache_converted: keep the converted weights of a large model on disk for the next load
        (None: unless VQGEN_CONVERTED_CACHE=0; converted.py)."""
        dev = resolve_device(device)
        plan = plan_for(dev, None if dtype is None else resolve_dtype(dtype, dev), exact=exact, quantize=quantize)
        resolved = resolved or ResolvedModel(path=Path(folder), name=str(folder))
        return cls(load_components(Path(folder), dev, plan.dtype, plan, cache_converted), plan, resolved)

    @property
    def chain(self) -> Chain:
        """The usable chain: the scheduler's timesteps that the transformer can be told."""
        return Chain.of(self.c.schedule.num_timesteps, self.c.transformer.cfg.num_timesteps)

    @property
    def num_timesteps(self) -> int:
        """Steps of the whole usable chain: the default number of steps, and the most there can be."""
        return self.chain.length

    @property
    def image_size(self) -> tuple[int, int]:
        cfg, s = self.c.transformer.cfg, self.c.vqvae.cfg.scale
        return cfg.width * s, cfg.height * s

    def resolve(self, **settings) -> Resolved:
        """The settings a call with these keyword arguments runs with, and where each comes from:
        the arguments, else the model's recommendation, else defaults.py (vqgen.settings)."""
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise TypeError(f"unknown setting {unknown[0]!r}; the settings are {', '.join(SETTINGS)}")
        return resolve(settings, None, self.recommended, chain=self.chain)

    def __call__(self, prompt: str | list[str], *, seed: int | list[int] | None = None, num_images: int = defaults.NUM_IMAGES,
                 on_step: StepCallback | None = None, on_images: ImagesCallback | None = None,
                 events: Events | None = None, chunk_size: int = defaults.CHUNK_SIZE, **settings) -> Generation:
        """num_images of one prompt, or one image for each prompt of a list. Seeds: seed, seed+1,
        ... (random when None), or a list with one seed per image. Settings (steps, guidance,
        truncation, schedule, sampler, purity_weight) as keyword arguments; those not given are
        the model's recommendation or defaults.py's. Any number of images runs in chunks of
        chunk_size: on_images(first, chunk) sees each chunk as soon as it is made, on_step(done,
        total) each step of each chunk; events (vqgen.events.Events) gets the same and the warnings."""
        prompts, seeds = self._prompts_and_seeds(prompt, seed, num_images)
        return self.run(prompts, seeds, self.resolve(**settings).settings, events=events, on_step=on_step,
                        on_images=on_images, chunk_size=chunk_size)

    def run(self, prompts: list[str], seeds: list[int], settings: Settings, *, events: Events | None = None,
            on_step: StepCallback | None = None, on_images: ImagesCallback | None = None,
            chunk_size: int = defaults.CHUNK_SIZE) -> Generation:
        """Images for prompts[i] with seeds[i], chunk_size at a time through the network (a chunk
        changes no image, only the memory a run needs). The whole Generation is returned at the
        end; on_images(first, chunk) gets each chunk as it is made (its images are first, first+1, ...)."""
        steps = settings.steps or self.num_timesteps

        def chunk(first: int, last: int, step: StepCallback, events: Events, label: str) -> Generation:
            events.steps_started(label, steps)
            try:
                return self.generate(prompts[first:last], seeds[first:last], settings, on_step=step)
            finally:
                events.steps_finished()

        return self._in_chunks(chunk, prompts, seeds, settings, "denoising", events, on_step, on_images, chunk_size)

    def _in_chunks(self, chunk, prompts: list[str], seeds: list[int], settings: Settings, label: str, events: Events | None,
                   on_step: StepCallback | None, on_images: ImagesCallback | None, chunk_size: int) -> Generation:
        """The chunk loop run() and run_edits() share: chunk(first, last, step, events, label)
        makes images first..last-1; this relays steps, warnings and on_images, and joins the parts."""
        events = events or NO_EVENTS
        if chunk_size < 1:
            raise SettingError("chunk_size", chunk_size, "at least 1")
        total = len(prompts)
        images, warnings, timesteps, edits = [], [], [], None

        def step(done: int, of: int) -> None:
            events.step(done, of)
            if on_step is not None:
                on_step(done, of)

        for first in range(0, total, chunk_size):
            last = min(first + chunk_size, total)
            part = chunk(first, last, step, events, label if total == 1 else f"images {first + 1}-{last} of {total}")
            for warning in dict.fromkeys(part.warnings):
                events.warning(warning)
            if on_images is not None:
                on_images(first, part)
            images += part.images
            if part.edits is not None:
                edits = (edits or []) + part.edits
            warnings += [w for w in part.warnings if w not in warnings]
            timesteps = part.timesteps
        return Generation(images, list(seeds), list(prompts), settings, timesteps, warnings, edits)

    @torch.inference_mode()
    def generate(self, prompts: list[str], seeds: list[int], settings: Settings, on_step: StepCallback | None = None) -> Generation:
        """Images for prompts[i] with seeds[i], all run through the network together."""
        tokens, timesteps, warnings = self.generate_tokens(prompts, seeds, settings, on_step)
        images = self.decode(tokens)
        return Generation(images, list(seeds), list(prompts), settings, timesteps, warnings)

    @torch.inference_mode()
    def encode_prompts(self, prompts: list[str], guided: bool) -> tuple[torch.Tensor, list[str]]:
        """(text (B or 2B, L, E), warnings): each distinct prompt encoded once; with guidance the
        null sequence first, [uncond x B ; cond x B], as the reference orders them."""
        c = self.c
        unique = list(dict.fromkeys(prompts))
        encoded = c.text_encoder.encode(unique)
        by_prompt = dict(zip(unique, encoded.embeddings))
        text = torch.stack([by_prompt[p] for p in prompts])  # (B, L, E)
        warnings = [f"prompt longer than {c.text_encoder.length} tokens; its end is ignored (as the reference does): {p[:60]!r}"
                    for p in encoded.truncated]
        if guided:
            text = torch.cat([c.text_encoder.null().expand_as(text), text])
        return text, warnings

    @torch.inference_mode()
    def generate_tokens(self, prompts, seeds, settings: Settings, on_step=None, inspect=None, edit=None):
        """(tokens (B, N), timesteps, warnings). inspect(t, x_t, log p(x0 | x_t)), if given, sees each
        step's input and the network's guided output before truncation (for measurements).

        edit (an editing.TokenEdit): start from the source's tokens at edit.start_timestep instead of
        all masks at the top, and put the kept tokens back after every step (editing.py)."""
        settings.validate(self.chain)  # here, not only in generate: a step beyond the chain would crash
        c, device = self.c, self.device
        cfg = c.transformer.cfg
        B = len(prompts)
        guided = settings.guidance > 1.0

        # 1. Text, once per distinct prompt; the guidance null once.
        text, warnings = self.encode_prompts(prompts, guided)

        # 2. Cross-attention keys/values of the text: fixed for the whole chain.
        memory = c.transformer.text_memory(text)

        # 3. Which timesteps, and the transition tables for each jump, all on the device up front.
        steps = settings.steps or self.num_timesteps
        if edit is None:
            timesteps = timesteps_for(settings.schedule, self.num_timesteps, steps)
        else:
            timesteps = timesteps_from(settings.schedule, self.num_timesteps, steps, edit.start_timestep)
        transitions = c.schedule.transitions(timesteps, timesteps[1:] + [-1])
        transitions = [type(tr)(*(v.to(device) for v in vars(tr).values())) for tr in transitions]
        t_tensors = [torch.tensor(t, device=device) for t in timesteps]
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

        # 4. The reverse chain from all masks (or, for an edit, from the source's noised tokens).
        if edit is None:
            x = torch.full((B, cfg.num_tokens), cfg.mask_id, dtype=torch.long, device=device)
        else:
            x = edit.initial(timesteps[0], generators)
        for i, t in enumerate(t_tensors):
            logp = c.transformer(torch.cat([x, x]) if guided else x, t, memory)  # (B or 2B, K-1, N)
            if guided:
                logp = apply_guidance(logp, settings.guidance)
            if inspect is not None:
                inspect(t, x, logp)
            logp = truncate(logp, settings.truncation)
            if i == len(t_tensors) - 1:
                x = gumbel_sample(logp, generators)  # the last step draws x0 at every position
            elif settings.sampler == "purity":
                keep = c.schedule.ctt[timesteps[i + 1]] / c.schedule.ctt[timesteps[i]]
                x = purity_step(logp, x, [keep] * B, settings.purity_weight, generators)
            else:
                x = gumbel_sample(posterior_logits(logp, x, transitions[i]), generators)
            if edit is not None:
                x = edit.after_step(x, timesteps[i + 1] if i + 1 < len(timesteps) else -1, generators)
            if on_step is not None:
                on_step(i + 1, len(t_tensors))
        if edit is not None and edit.context_timestep is not None:
            # What the decoder will see around the hole (editing.py, "context"): the kept positions
            # masked, the new tokens as drawn, one more network call, the most likely token at each
            # kept position. No random numbers.
            x_in = edit.context_input(x)
            t = torch.tensor(edit.context_timestep, device=device)
            logp = c.transformer(torch.cat([x_in, x_in]) if guided else x_in, t, memory)
            if guided:
                logp = apply_guidance(logp, settings.guidance)
            edit.decode_tokens = edit.with_context(x, truncate(logp, settings.truncation).argmax(dim=1))
        return x, timesteps, warnings

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> list:
        from PIL import Image

        cfg = self.c.transformer.cfg
        # One image at a time, like the reference: convolution kernels may pick a different
        # algorithm (and different last bits) for a different batch size.
        return [Image.fromarray(to_uint8(self.c.vqvae.decode(row[None], cfg.height, cfg.width))[0].cpu().numpy())
                for row in tokens]

    # ----------------------------------------------------------------------------------------
    # Editing (editing.py): inpainting with a mask, variations without one.

    def edit(self, image, prompt: str | list[str], mask=None, *, strength: float | None = None,
             seed: int | list[int] | None = None, num_images: int = defaults.NUM_IMAGES, on_step: StepCallback | None = None,
             on_images: ImagesCallback | None = None, events: Events | None = None, chunk_size: int = defaults.CHUNK_SIZE,
             region=None, grow: int | None = None, fit: str | None = None, paste: bool | None = None,
             feather: int | None = None, start: str | None = None, keep: str | None = None, fill: str | None = None,
             context: str | None = None, **settings) -> Generation:
        """Repaint the white (or opaque) part of `mask` on `image` following `prompt`; without a mask,
        a variation of the whole image. image/mask: a file path, a PIL image or a uint8 array, any
        size and mode. strength in (0, 1] (default 1): how far back along the chain the repainted
        tokens go (1: from the mask token, as generation; 0.3: a close variation). region: (x0, y0,
        x1, y1) pixels of the image to repaint (with a mask: both). grow: tokens added around the
        mask; fit: crop, pad or stretch to the model's size; paste: the original pixels outside the
        mask. Prompts, seeds, settings, chunks and callbacks as in __call__. Returns the same
        Generation, with .edits (one editing.EditInfo per image) saying what each was made from.
        With every pixel masked and strength 1 it is __call__'s image, bit for bit."""
        from .editing import EditOptions
        from .settings import EDIT_DEFAULTS

        prompts, seeds = self._prompts_and_seeds(prompt, seed, num_images)
        edit = resolve(dict(strength=strength, grow=grow, fit=fit, paste=paste, region=region), fallback=EDIT_DEFAULTS).values
        extra = {k: v for k, v in dict(feather=feather, start=start, keep=keep, fill=fill, context=context).items() if v is not None}
        options = EditOptions(strength=edit["strength"], grow=edit["grow"], fit=edit["fit"], paste=edit["paste"], **extra)
        options.validate()
        run_settings = self.resolve(**settings).settings
        source = self.prepare_source(image, mask, region=edit["region"], fit=options.fit, grow=options.grow)
        return self.run_edits([source] * len(prompts), prompts, seeds, run_settings, options, events=events,
                              on_step=on_step, on_images=on_images, chunk_size=chunk_size)

    def _prompts_and_seeds(self, prompt, seed, num_images) -> tuple[list[str], list[int]]:
        if isinstance(prompt, str):
            check("num_images", num_images)
            prompts = [prompt] * num_images
        else:
            prompts = list(prompt)
            if not prompts:
                raise SettingError("prompt", prompts, "at least one prompt", "{name}: an empty list; give {allowed}")
        if seed is None or isinstance(seed, int):
            base = random_seed() if seed is None else int(seed)
            return prompts, [base + i for i in range(len(prompts))]
        seeds = [int(s) for s in seed]
        if len(seeds) != len(prompts):
            raise SettingError("seed", f"list of {len(seeds)}", f"one seed per image ({len(prompts)})", "{name}: a {value}; give {allowed}")
        return prompts, seeds

    def run_edits(self, sources: list, prompts: list[str], seeds: list[int], settings: Settings, options, *,
                  events: Events | None = None, on_step: StepCallback | None = None, on_images: ImagesCallback | None = None,
                  chunk_size: int = defaults.CHUNK_SIZE) -> Generation:
        """Edits of sources[i] (editing.EditSource) with prompts[i] and seeds[i], in chunks, with
        the same callbacks and events as run()."""

        def chunk(first: int, last: int, step: StepCallback, events: Events, label: str) -> Generation:
            return self.edit_sources(sources[first:last], prompts[first:last], seeds[first:last], settings, options,
                                     on_step=step, events=events, label=label)

        return self._in_chunks(chunk, prompts, seeds, settings, "editing", events, on_step, on_images, chunk_size)

    def edit_timesteps(self, source, options, settings: Settings) -> list[int]:
        """The timesteps an edit of `source` runs (its first is where the chain starts)."""
        return timesteps_from(settings.schedule, self.num_timesteps, settings.steps or self.num_timesteps,
                              self.edit_start(source, options))

    def prepare_source(self, image, mask=None, *, region=None, fit: str = defaults.EDIT_FIT, grow: int = defaults.EDIT_GROW):
        """An editing.EditSource at this model's size and token grid."""
        from .editing import prepare_source

        return prepare_source(image, mask, size=self.image_size, cell=self.c.vqvae.cfg.scale, fit=fit, grow=grow, region=region)

    @torch.inference_mode()
    def encode_image(self, image) -> torch.Tensor:
        """A PIL RGB image at the model's size -> its tokens (N,) by the VQ-VAE encoder."""
        from .editing import image_to_tensor

        vq = self.c.vqvae
        dtype = next(vq.parameters()).dtype
        return vq.encode(image_to_tensor(image, self.device, dtype))[0]

    def edit_start(self, source, options) -> int:
        """The timestep an edit of `source` starts from."""
        from .editing import match_timestep, strength_timestep

        length = self.num_timesteps
        if options.strength >= 1 and options.start == "match":
            return match_timestep(self.c.schedule, length, source.repaint_share)
        return strength_timestep(self.c.schedule, length, options.strength)

    @torch.inference_mode()
    def edit_sources(self, sources: list, prompts: list[str], seeds: list[int], settings: Settings, options,
                     on_step: StepCallback | None = None, events: Events | None = None, label: str = "editing") -> Generation:
        """Edit sources[i] (editing.EditSource) with prompts[i] and seeds[i], all in one chunk. Rows
        that start from the same timestep run through the network together (one t per call)."""
        events = events or NO_EVENTS
        from .editing import EditInfo, TokenEdit, match_timestep, paste_back

        options.validate()
        settings.validate(self.chain)
        for source in dict((id(s), s) for s in sources).values():
            if options.fill not in source.encoded:
                source.encoded[options.fill] = self.encode_image(source.encoder_input(options.fill))
        starts = [self.edit_start(s, options) for s in sources]
        tokens: list = [None] * len(sources)
        decoded: list = [None] * len(sources)  # what is decoded: the tokens, or with a predicted context
        timesteps_of: dict[int, list[int]] = {}
        warnings: list[str] = []
        for t0 in dict.fromkeys(starts):
            rows = [i for i, t in enumerate(starts) if t == t0]
            x0 = torch.stack([sources[i].encoded[options.fill] for i in rows]).to(self.device)
            repaint = torch.stack([torch.from_numpy(sources[i].repaint.reshape(-1)) for i in rows]).to(self.device)
            edit = TokenEdit(x0, repaint, options.strength, options.keep, self.c.schedule, t0)
            if options.paste and options.context == "predicted" and bool((~repaint).any()):
                kept_share = float((~repaint).float().mean())
                edit.context_timestep = match_timestep(self.c.schedule, self.num_timesteps, kept_share)
            steps = len(timesteps_from(settings.schedule, self.num_timesteps, settings.steps or self.num_timesteps, t0))
            events.steps_started(label, steps)
            try:
                x, timesteps, w = self.generate_tokens([prompts[i] for i in rows], [seeds[i] for i in rows], settings, on_step, edit=edit)
            finally:
                events.steps_finished()
            timesteps_of[t0] = timesteps
            warnings += w
            shown = edit.decode_tokens if edit.decode_tokens is not None else x
            for j, i in enumerate(rows):
                tokens[i], decoded[i] = x[j], shown[j]
        images = self.decode(torch.stack(decoded))
        feather = options.feather if options.feather is not None else self.c.vqvae.cfg.scale // 2
        edits = []
        for i, source in enumerate(sources):
            decoded_image = images[i]
            if options.paste and source.pixel_mask is not None:
                images[i] = paste_back(images[i], source.image, source.pixel_mask, feather)
            edits.append(EditInfo(source, options, starts[i], len(timesteps_of[starts[i]]), {"feather": feather}, tokens[i],
                                  source.encoded[options.fill], decoded_image))
        return Generation(images, list(seeds), list(prompts), settings, timesteps_of[starts[0]], list(dict.fromkeys(warnings)), edits)
