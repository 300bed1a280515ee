"""`vqgen train-demo OUTPUT`: train the bundled shapes model from scratch (see vqgen/demo/train.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import defaults
from ..errors import UsageError
from . import app


@app.command("train-demo")
def train_demo(
    output: Path = typer.Argument(..., help="Folder for the trained model (a VQ-Diffusion model folder; use it with --model OUTPUT)."),
    seed: int = typer.Option(defaults.DEMO_TRAIN_SEED, "--seed", help="Seed of the data, the initialisation and every batch (the default made the bundled model, on CUDA)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Transformer training steps (default 4000)."),
    vq_steps: Optional[int] = typer.Option(None, "--vq-steps", help="VQ-VAE training steps (default 600)."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Stop the transformer stage after this many minutes (the result then depends on the machine's speed)."),
    threads: int = typer.Option(2, "--threads", help="CPU threads; results are reproducible for a given thread count."),
    device: str = typer.Option("cpu", "--device", help="cpu (reproducible) or cuda (fast, not bit-reproducible)."),
    smoke: bool = typer.Option(False, "--smoke", help="A tiny configuration that runs in seconds (for tests; the model is useless)."),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Judge the trained model on the seen combinations at the end."),
) -> None:
    """Train the demo shapes model: under an hour on 2 CPU cores (58.5 min measured), 3 minutes on a GPU."""
    from dataclasses import replace

    if output.exists() and any(output.iterdir()):
        raise UsageError(f"{output} exists and is not empty; choose a new folder")
    for name, value in (("--steps", steps), ("--vq-steps", vq_steps), ("--threads", threads)):
        if value is not None and value < 1:
            raise UsageError(f"{name} {value}: must be at least 1")

    from ..demo.train import SMOKE, TrainConfig, main

    cfg = replace(SMOKE if smoke else TrainConfig(), seed=seed, threads=threads, device=device,
                  time_budget=None if time_budget is None else time_budget * 60)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    if vq_steps is not None:
        cfg = replace(cfg, vq_steps=vq_steps)
    main(output, cfg, evaluate=evaluate and not smoke, on_log=lambda line: print(line, flush=True))
    print(output, flush=True)
