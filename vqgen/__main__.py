"""`python -m vqgen ...`, the same as the `vqgen` command; also what `torchrun -m vqgen batch ...`
starts in each process."""

from .cli import run

if __name__ == "__main__":
    run()
