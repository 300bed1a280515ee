"""Stress: many consecutive two-process `torchrun ... -m vqgen batch` runs must all exit 0.

Before batch processes met over the c10d store, a gloo process group carried the seed and the
counts, and a run aborted at exit ("terminate called without an active exception", SIGABRT) in
about one run of eight on a loaded 2-core machine: gloo's worker thread released the last
collective's tensors after the interpreter had started shutting down. This script repeats the
run, optionally with busy background processes (the abort needed a loaded CPU), and prints every
run's exit status and whether that message appeared.

    python bench/stress_torchrun.py                 # 20 runs of the bundled shapes model
    python bench/stress_torchrun.py --runs 50 --busy 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ["a red circle in the top left", "a blue square in the center", "a green triangle in the bottom right",
           "a yellow circle in the bottom left", "a purple square in the top right"]


def spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10000))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--busy", type=int, default=1, help="busy background processes during the runs (default 1)")
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--steps", default="5")
    args = parser.parse_args()

    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    failures = 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prompts = Path(tmp) / "prompts.txt"
            prompts.write_text("\n".join(PROMPTS) + "\n")
            for i in range(args.runs):
                started = time.monotonic()
                command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "vqgen", "batch", str(prompts), str(Path(tmp) / f"out{i}"), "-m", args.model,
                           "--steps", args.steps, "-b", "2", "--device", "cpu", "-q"]
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
                aborted = "terminate called" in done.stderr
                images = len(list((Path(tmp) / f"out{i}").glob("*.png")))
                ok = done.returncode == 0 and not aborted and images == len(PROMPTS)
                failures += not ok
                print(f"run {i + 1:2d}: exit {done.returncode}, images {images}/{len(PROMPTS)}, "
                      f"abort message {'yes' if aborted else 'no'}, {time.monotonic() - started:.1f} s", flush=True)
    finally:
        stop.set()
        for p in spinners:
            p.join()
    print(f"{args.runs - failures} of {args.runs} runs clean ({args.busy} busy background process(es), "
          f"{os.cpu_count()} CPUs)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
