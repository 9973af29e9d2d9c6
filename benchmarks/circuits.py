"""Time of ``expanded_weights`` for InceptionV1 (random weights) between two layers.

Run from the repository root::

    python benchmarks/circuits.py                         # mixed3a -> mixed3b, 224 px, CPU
    python benchmarks/circuits.py --device cuda           # on a GPU (the default when one exists)
    python benchmarks/circuits.py --source mixed3b --target mixed4a --batch-size 128

Prints a markdown row: seconds for the whole call (all target channels; the first call after
building the model, so first-call costs are included: this is what a user waits), and peak
memory above the state after building the model (CUDA: max allocated; CPU: max resident set
of the process). The weights' values do not change the time.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from lucent_core.models import create_model
from lucent_core.recipes.circuits import expanded_weights


def _peak_start(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_end(device: torch.device, start: int) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--source", default="mixed3a")
    parser.add_argument("--target", default="mixed3b")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model("inceptionv1", pretrained=False).to(device)
    start = _peak_start(device)
    began = time.perf_counter()
    weights = expanded_weights(model, args.source, args.target, size=args.size,
                               batch_size=args.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - began
    peak = _peak_end(device, start) / 2**20
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print("| device | source -> target | size | batch | shape | seconds | peak MB |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {name} | {args.source} -> {args.target} | {args.size} | {args.batch_size} | "
          f"{tuple(weights.shape)} | {seconds:.1f} | {peak:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
