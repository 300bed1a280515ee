"""vqgen: text to image with VQ-Diffusion, exact to the reference and faster.

    import vqgen
    pipe = vqgen.load("microsoft/vq-diffusion-ithq")   # or a local model folder
    result = pipe("a red bus", seed=42)
    result.images[0].save("bus.png")

Any number of images runs in chunks (defaults.CHUNK_SIZE per network run); callbacks see each
chunk and each step, and an Events object (vqgen.events) gets download progress and messages:
the library itself never prints. Errors a user can fix are VqgenError; a setting's is a
SettingError naming the setting, its value and what is allowed.

Heavy modules (torch, transformers) load on first use, so `import vqgen` and `vqgen --help` stay fast.
"""

from .errors import SettingError, VqgenError
from .events import Events
from .settings import Settings

__version__ = "0.1.0"


def load(model: str = None, *, device: str = "auto", dtype: str | None = None, exact: bool = False,
         quantize: str | None = None, events: Events | None = None, **resolve_options):
    """A ready Pipeline for a local model folder, a bundled model's name or a Hub repo id (default:
    the ITHQ model, downloaded on first use; its progress goes to `events`).

    exact=True: the reference's arithmetic, the same images as diffusers bit for bit; otherwise the
    fastest faithful kernels for the device (vqgen.kernels). quantize="int8": int8 Linear layers.
    resolve_options: revision, precision, offline (hub.resolve_model)."""
    from . import defaults
    from .hub import resolve_model
    from .pipeline import Pipeline

    resolved = resolve_model(model or defaults.MODEL, events=events, **resolve_options)
    return Pipeline.from_folder(resolved.path, device=device, dtype=dtype, resolved=resolved, exact=exact, quantize=quantize)


__all__ = ["__version__", "load", "Events", "Settings", "SettingError", "VqgenError"]
