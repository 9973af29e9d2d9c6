"""Speed of lucent_core next to Lucent and next to the floor, on the same workloads.

Run from the repository root (CPU or GPU)::

    pip install --no-deps torch-lucent==0.1.8 && pip install ipython decorator  # for Lucent
    python benchmarks/speed.py                       # full table (about 10 min on 2 CPU cores)
    python benchmarks/speed.py --quick               # InceptionV1 mixed4a only
    python benchmarks/speed.py --device cuda --batch 64 --bf16 --compile

Every measurement runs in a fresh subprocess (clean memory statistics, no shared caches).
Seconds per step are the median of three ``(T(2n) - T(n)) / n`` over two render lengths,
after a warm-up render, so model building and first-call costs cancel out.

Columns:
  floor   one forward + backward of the model truncated at the target layer, plain ReLU, no
          weight gradients, the same input batch and memory layout as lucent_core's (the least
          the model part of a step can cost);
  param   the parameterisation plus render_vis' default transforms alone (forward + backward);
  ours    lucent_core.render_vis (the atlas row: render_atlas); ``ours / (floor + param)`` is
          how close it gets to the floor;
  Lucent  Lucent 0.1.8's render_vis on the same units (its own defaults: 128 px upsampled to
          224, its transforms, its redirected ReLU); ``Lucent / ours`` is our speed-up;
  units/s units rendered per second for full 512-step renders (batch / (512 * step time));
  peak    peak memory of the measuring process above its state after building the model
          (CUDA: max allocated; CPU: max resident set).

Modes: "same input" feeds both libraries a 224 x 224 model input (ours renders 212 px, which
the standard transforms pad to 224; Lucent renders 128 px and upsamples to 224, as it always
does); "defaults" runs each library as it comes (ours: 128 px, transforms give 140 px input).
The "atlas" row renders a whole layer's worth of units (``--layer-batch``, default 64) with
``render_atlas``, as ``lucent-core atlas`` does (per-unit seeds, PNGs and records included);
the summary compares the best rate of ours with Lucent's best rate at any batch size.

Lucent fix: Lucent 0.1.8 calls ``kornia.get_rotation_matrix2d`` and ``kornia.warp_affine``,
which kornia >= 0.6 moved to ``kornia.geometry.transform``; this script aliases them back
before importing Lucent (in this benchmark only, never in lucent_core).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

LIBRARIES = ("floor", "param", "ours", "lucent", "atlas")
LUCENT_LAYERS = {"inceptionv1": ["mixed3a", "mixed4a", "mixed5b"], "vgg16_hed": ["block4_conv3"]}
RENDER_STEPS = 512


# --- one measurement (runs in a subprocess) -------------------------------------------------

def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_start(device):
    import torch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_end(device, start):
    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - start
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start


def _per_step(run, steps, device, repeats=3):
    """Seconds per step: the median over ``repeats`` of (T(n2) - T(n1)) / (n2 - n1), after a
    warm-up run (first-call costs such as allocator growth and kernel selection cancel out)."""
    def timed(n):
        _sync(device)
        started = time.perf_counter()
        run(n)
        _sync(device)
        return time.perf_counter() - started

    timed(steps[0])
    estimates = sorted((timed(steps[1]) - timed(steps[0])) / (steps[1] - steps[0])
                       for _ in range(repeats))
    return estimates[len(estimates) // 2]


def _ours_model(name):
    from lucent_core.models import create_model
    return create_model(name, pretrained=name == "vgg16_hed")


def measure(job: dict) -> dict:
    import torch
    torch.manual_seed(0)
    device = torch.device(job["device"])
    layer, batch, size = job["layer"], job["batch"], job["size"]
    units = [476 % 508] if batch == 1 and layer == "mixed4a" else list(range(batch))
    steps = (job["steps"], 2 * job["steps"])
    result = dict(job)

    if job["library"] == "lucent":
        import kornia
        import kornia.geometry.transform as KT
        kornia.get_rotation_matrix2d = KT.get_rotation_matrix2d   # see the module docstring
        kornia.warp_affine = KT.warp_affine
        from lucent.modelzoo import inceptionv1 as lucent_inceptionv1
        from lucent.optvis import objectives as lobj
        from lucent.optvis import param as lparam
        from lucent.optvis import render as lrender
        if job["model"] == "inceptionv1":
            model = lucent_inceptionv1(pretrained=False)
        else:  # Lucent has no HED VGG16: give it ours (Lucent normalises like torchvision)
            model = _ours_model(job["model"])
        model = model.to(device).eval()
        objective = sum(lobj.channel(layer, u, batch=i) for i, u in enumerate(units))

        def run(n):
            lrender.render_vis(model, objective, lambda: lparam.image(128, batch=batch),
                               thresholds=(n,), progress=False, show_image=False)
    else:
        from lucent_core import objectives, param, render_vis
        from lucent_core.hooks import capture, frozen, run_to_layers
        from lucent_core.relu import redirecting
        from lucent_core.transforms import standard_affine
        model = _ours_model(job["model"]).to(device)
        if job["library"] == "floor":
            x = torch.rand(batch, 3, size + 12, size + 12, device=device, requires_grad=True)

            def run(n):
                with frozen(model), redirecting(model, False), \
                        capture(model, [layer]) as acts:
                    for _ in range(n):
                        model_input = model.preprocessing(x)  # the layout render_vis uses
                        model_input = model_input.contiguous(memory_format=torch.channels_last)
                        run_to_layers(model, model_input, acts)
                        acts[layer].mean().backward()
        elif job["library"] == "param":
            transform = standard_affine()

            def run(n):
                p = param.image(size, batch=batch).to(device)
                for _ in range(n):
                    transform(p()).mean().backward()
        elif job["library"] == "atlas":  # what `lucent-core atlas` does, files included
            from lucent_core.atlas import render_atlas

            def run(n):
                with tempfile.TemporaryDirectory() as out:
                    render_atlas(model, out, layer, units=f"0:{batch}", batch=batch, steps=n,
                                 size=size, progress=False, index=False,
                                 precision="bfloat16" if job.get("bf16") else "float32",
                                 compile=bool(job.get("compile")))
        else:
            objective = objectives.batch_channels(layer, units)
            options = {}
            if job.get("bf16"):
                options["autocast"] = torch.bfloat16
            if job.get("compile"):
                options["compile"] = True

            def run(n):
                render_vis(model, objective, lambda: param.image(size, batch=batch),
                           thresholds=(n,), progress=False, **options)
    start = _peak_start(device)
    result["step_s"] = _per_step(run, steps, device)
    result["peak_bytes"] = _peak_end(device, start)
    return result


# --- the table (runs the measurements) -------------------------------------------------------

def _jobs(args) -> list[dict]:
    jobs = []
    layers = {"inceptionv1": ["mixed4a"]} if args.quick else LUCENT_LAYERS
    for model, model_layers in layers.items():
        for layer in model_layers:
            for batch in (1, args.batch):
                for mode, size in (("same input", 212), ("defaults", 128)):
                    base = {"model": model, "layer": layer, "batch": batch, "mode": mode,
                            "size": size, "device": args.device, "steps": args.steps}
                    jobs.append({**base, "library": "floor"})
                    jobs.append({**base, "library": "param"})
                    jobs.append({**base, "library": "ours", "bf16": args.bf16,
                                 "compile": args.compile})
                    if mode == "same input" and not args.no_lucent:  # Lucent: always 224
                        jobs.append({**base, "library": "lucent", "size": 128})
    if args.layer_batch:  # a whole layer at once: how many units per second an atlas gets
        base = {"model": "inceptionv1", "layer": "mixed4a", "batch": args.layer_batch,
                "mode": "atlas", "size": 128, "device": args.device,
                "steps": max(2, args.steps // 2)}
        jobs += [{**base, "library": "floor"}, {**base, "library": "param"},
                 {**base, "library": "atlas", "bf16": args.bf16, "compile": args.compile}]
    return [job for job in jobs if job["library"] in args.libraries]


def _run_job(job: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)],
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        return {**job, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ms(r: dict) -> str:
    return f"{1e3 * r['step_s']:.1f}" if "step_s" in r else r.get("error", "-")[:30]


def _rate(r: dict) -> float | None:
    """Units per second of full 512-step renders."""
    return r["batch"] / (RENDER_STEPS * r["step_s"]) if "step_s" in r else None


def _mb(r: dict) -> str:
    return f"{r['peak_bytes'] / 2 ** 20:.0f}" if "peak_bytes" in r else "-"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(results: list[dict]) -> str:
    """The markdown table, then the targets of the speed issue checked against it."""
    lucent = {(r["model"], r["layer"], r["batch"]): r for r in results
              if r["library"] == "lucent" and "error" not in r}
    groups: dict = {}
    for r in results:
        groups.setdefault((r["model"], r["layer"], r["batch"], r["mode"]), {})[r["library"]] = r
    lines = ["| model | layer | batch | mode | floor ms | param ms | ours ms | "
             "ours / (floor + param) | Lucent ms | Lucent / ours | ours units/s | "
             "Lucent units/s | ours peak MB | Lucent peak MB |", "|" + "---|" * 14]
    ratios: dict = {}
    for (model, layer, batch, mode), g in groups.items():
        ours, floor, par = g.get("ours", g.get("atlas", {})), g.get("floor", {}), \
            g.get("param", {})
        luc = lucent.get((model, layer, batch), {})
        to_floor = (ours["step_s"] / (floor["step_s"] + par["step_s"])
                    if all("step_s" in r for r in (ours, floor, par)) else None)
        speedup = luc["step_s"] / ours["step_s"] if "step_s" in luc and "step_s" in ours \
            else None
        ratios[(model, layer, batch, mode)] = (to_floor, speedup, _rate(ours))
        lines.append(f"| {model} | {layer} | {batch} | {mode} | {_ms(floor)} | {_ms(par)} | "
                     f"{_ms(ours)} | {_fmt(to_floor)} | {_ms(luc) if luc else '-'} | "
                     f"{_fmt(speedup)} | {_fmt(_rate(ours), 3)} | {_fmt(_rate(luc), 3)} | "
                     f"{_mb(ours)} | {_mb(luc) if luc else '-'} |")
    lines += ["", "Targets (InceptionV1 mixed4a):"]
    one_same = ratios.get(("inceptionv1", "mixed4a", 1, "same input"), (None, None, None))
    one_default = ratios.get(("inceptionv1", "mixed4a", 1, "defaults"), (None, None, None))
    lines.append(f"- one unit, same input: {_fmt(one_same[1])}x faster than Lucent (target "
                 f">= 1.6), {_fmt(one_same[0])}x the floor (target <= 1.15)")
    lines.append(f"- one unit, each library's defaults: a 512-step render {_fmt(one_default[1])}"
                 "x faster than Lucent (target >= 3)")
    lucent_best = max((_rate(r) for k, r in lucent.items() if k[:2] == ("inceptionv1",
                                                                       "mixed4a")), default=None)
    ours_best = max((v[2] for k, v in ratios.items() if k[:2] == ("inceptionv1", "mixed4a")
                     and k[3] in ("defaults", "atlas") and v[2] is not None), default=None)
    layer_speedup = ours_best / lucent_best if ours_best and lucent_best else None
    lines.append(f"- whole layer: {_fmt(ours_best, 3)} units/s against Lucent's best "
                 f"{_fmt(lucent_best, 3)} units/s: {_fmt(layer_speedup)}x (target >= 3 on CPU, "
                 ">= 20 on a GPU)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--batch", type=int, default=None,
                        help="units per batch for the multi-unit rows (8 on CPU, 64 on GPU)")
    parser.add_argument("--steps", type=int, default=None,
                        help="n1 in T(2 n1) - T(n1) (4 on CPU, 20 on GPU)")
    parser.add_argument("--layer-batch", type=int, default=64,
                        help="units in the whole-layer row (mixed4a, ours; 0 to skip)")
    parser.add_argument("--quick", action="store_true", help="only InceptionV1 mixed4a")
    parser.add_argument("--no-lucent", action="store_true", help="skip Lucent")
    parser.add_argument("--bf16", action="store_true", help="ours under bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="ours with torch.compile")
    parser.add_argument("--libraries", default=",".join(LIBRARIES),
                        help=f"which rows to measure, comma-separated (default: all of "
                             f"{','.join(LIBRARIES)})")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(measure(json.loads(args.job))))
        return
    args.libraries = args.libraries.split(",")
    unknown = sorted(set(args.libraries) - set(LIBRARIES))
    if unknown:
        parser.error(f"unknown --libraries {unknown}; choose from {','.join(LIBRARIES)}")
    import torch
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = args.device.startswith("cuda")
    args.batch = args.batch or (64 if gpu else 8)
    args.steps = args.steps or (20 if gpu else 4)
    name = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; steps per measurement {args.steps} "
          f"and {2 * args.steps}", flush=True)
    results = []
    for job in _jobs(args):
        results.append(_run_job(job))
        r = results[-1]
        print(f"  {r['library']:6s} {r['model']} {r['layer']} batch {r['batch']} {r['mode']}: "
              + (f"{1e3 * r['step_s']:.1f} ms/step" if "step_s" in r else r["error"]),
              file=sys.stderr, flush=True)
    print(_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
