"""vqgen: text to image with VQ-Diffusion, exact to the reference and faster.

    import vqgen
    pipe = vqgen.load("microsoft/vq-diffusion-ithq")   # or a local model folder
    result = pipe("a red bus", seed=42)
    result.images[0].save("bus.png")

Heavy modules (torch, transformers) load on first use, so `import vqgen` and `vqgen --help` stay fast.
"""

__version__ = "0.1.0"


def load(model: str = None, *, device: str = "auto", dtype: str | None = None, exact: bool = False,
         quantize: str | None = None, **resolve_options):
    """A ready Pipeline for a local model folder or a Hub repo id (default: the ITHQ model).

    exact=True: the reference's arithmetic, the same images as diffusers bit for bit; otherwise the
    fastest faithful kernels for the device (vqgen.kernels). quantize="int8": int8 Linear layers."""
    from . import defaults
    from .hub import resolve_model
    from .pipeline import Pipeline

    resolved = resolve_model(model or defaults.MODEL, **resolve_options)
    return Pipeline.from_folder(resolved.path, device=device, dtype=dtype, resolved=resolved, exact=exact, quantize=quantize)


__all__ = ["__version__", "load"]
