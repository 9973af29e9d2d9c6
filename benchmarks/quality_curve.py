"""Time to quality: held-out score against render seconds, lucent_core's defaults and Lucent's.

Run from the repository root (Lucent 0.1.8 beside lucent_core, see benchmarks/README.md)::

    python benchmarks/quality_curve.py                   # 4 units, checkpoints 4 .. 512 steps
    python benchmarks/quality_curve.py --quick           # 1 unit, checkpoints 2, 4, 8
    python benchmarks/quality_curve.py --json curve.json --plot curve.png
    python benchmarks/quality_curve.py --lucent-from old.json   # Lucent's curves from a run

For each unit (the first ``--units`` ordinary, post-ReLU units of the sample of
``benchmarks/quality.py``), one render with lucent_core's defaults (``render_vis``: a 128 px
``DEFAULT_PARAM`` image, our transforms, Adam 0.05) and one with Lucent 0.1.8's defaults
(``render_vis``: ``param.image(128)``, its transforms, upsampled to 224) take a picture at
every checkpoint (``thresholds``) of the same render. Both run in this process, one after the
other, with the same torch threads; the order alternates from unit to unit, and one short
untimed render of each library comes first so that neither pays the process's first-call
costs.

Seconds: a global optimizer step hook (``torch.optim.optimizer.
register_optimizer_step_post_hook``) records the wall clock after every optimiser step; the
time of checkpoint ``n`` is the time after step ``n`` counted from the call to the library's
``render_vis`` (so setup inside the render counts, scoring does not; on a GPU the hook
synchronises first). The hook adds one clock read per step to each library.

Score: the best-scale held-out value of ``benchmarks/quality.py`` (the saved 8-bit picture at
128, 160, 192 and 224 px, mean unit value under the 16 held-out transforms, best size kept).

Time to quality: the target is Lucent's score after its last checkpoint (512 steps); ours
reaches it at the first checkpoint whose score is at least the target, its time and steps
interpolated linearly in score from the checkpoint before ("<=" when already at the first
checkpoint, "not reached" when never). The ratio is that time over Lucent's time to its last
checkpoint; the summary is the median over units (target: at most 1/10).

``--lucent-from`` takes Lucent's curves from an earlier run's ``--json`` instead of rendering
them again (Lucent's renders do not change with lucent_core's defaults); the run must have
used the same units, seed, checkpoints and sizes (checked), and its machine is recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from quality import (LAYERS, SIZES, _list, lucent_model, lucent_render, machine, ours_render,
                     sample_units, score)
from lucent_core.models import create_model
from lucent_core.param import DEFAULT_PARAM
from lucent_core.recipes.quality import held_out_transforms

THRESHOLDS = (4, 8, 16, 32, 64, 128, 256, 512)


def timed(run, device) -> tuple[list, list[float]]:
    """``run()``'s pictures and the seconds after each optimiser step since the call."""
    stamps: list[float] = []

    def hook(optimizer, args, kwargs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    handle = register_optimizer_step_post_hook(hook)
    try:
        started = time.perf_counter()
        pictures = run()
    finally:
        handle.remove()
    return pictures, [t - started for t in stamps]


def curve(model, library, u, thresholds, seed, device, rows, sizes) -> dict:
    """One render of ``library`` with a picture per threshold, each timed and scored."""
    if library == "lucent":
        wrapped = lucent_model(model)
        pictures, stamps = timed(lambda: lucent_render(wrapped, u["layer"], u["unit"],
                                                       thresholds, seed), device)
    else:
        pictures, stamps = timed(lambda: ours_render(model, DEFAULT_PARAM, u["layer"],
                                                     u["unit"], thresholds, seed), device)
    assert len(stamps) == max(thresholds), (library, len(stamps))
    points = []
    for steps, picture in zip(thresholds, pictures):
        s = score(model, picture, u["layer"], u["unit"], sizes, rows)
        points.append({"steps": steps, "seconds": stamps[steps - 1], "held_out": s["held_out"],
                       "plain": s["plain"], "size": s["size"]})
    return {"points": points}


def earlier_lucent(path, units, thresholds, sizes, seed) -> dict | None:
    """The earlier run at ``path`` (None without one), refused unless it rendered the same
    units with the same seed, checkpoints and sizes."""
    if path is None:
        return None
    earlier = json.loads(Path(path).read_text())
    args = earlier["args"]
    same = ([(r["layer"], r["unit"]) for r in earlier["results"]]
            == [(u["layer"], u["unit"]) for u in units]
            and sorted(int(t) for t in _list(args["thresholds"])) == list(thresholds)
            and tuple(int(s) for s in _list(args["sizes"])) == tuple(sizes)
            and args["seed"] == seed)
    if not same:
        raise SystemExit(f"{path} rendered other units, seed, checkpoints or sizes; run "
                         "without --lucent-from")
    print(f"# Lucent's curves from {path} ({earlier['machine']})", flush=True)
    return earlier


def reach(points: list[dict], target: float) -> dict:
    """When ``points`` (in order of steps) first reach ``target``, interpolated."""
    for i, p in enumerate(points):
        if p["held_out"] >= target:
            if i == 0:
                return {"seconds": p["seconds"], "steps": p["steps"], "bound": "<="}
            q = points[i - 1]
            f = (target - q["held_out"]) / (p["held_out"] - q["held_out"])
            return {"seconds": q["seconds"] + f * (p["seconds"] - q["seconds"]),
                    "steps": q["steps"] + f * (p["steps"] - q["steps"]), "bound": ""}
    return {"seconds": math.inf, "steps": math.inf, "bound": "not reached"}


def plot(results: list[dict], path: str, title: str) -> None:
    """Score / Lucent's final score against seconds, both libraries, per unit and median."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for library, color, label in (("ours", "tab:blue", "lucent_core (defaults)"),
                                  ("lucent", "tab:orange", "Lucent 0.1.8 (defaults)")):
        curves = []
        for r in results:
            pts = r[library]["points"]
            xs = [p["seconds"] for p in pts]
            ys = [p["held_out"] / r["target"] for p in pts]
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=1)
            curves.append((xs, ys))
        xs = [statistics.median(c[0][i] for c in curves) for i in range(len(curves[0][0]))]
        ys = [statistics.median(c[1][i] for c in curves) for i in range(len(curves[0][1]))]
        ax.plot(xs, ys, color=color, linewidth=2.5, marker="o", label=f"{label}, median")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("render seconds (wall clock)")
    ax.set_ylabel("held-out score / Lucent's final score")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _g(x, digits=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return "not reached" if math.isinf(x) else f"{x:.{digits}g}"


def report(results: list[dict], thresholds) -> str:
    lines = ["| steps | ours s (median) | ours score / target (median) | Lucent s (median) | "
             "Lucent score / target (median) |", "|---|---|---|---|---|"]
    for i, steps in enumerate(thresholds):
        cells = []
        for library in ("ours", "lucent"):
            cells.append(_g(statistics.median(r[library]["points"][i]["seconds"]
                                              for r in results)))
            cells.append(_g(statistics.median(r[library]["points"][i]["held_out"] / r["target"]
                                              for r in results)))
        lines.append(f"| {steps} | " + " | ".join(cells) + " |")
    lines += ["", "| unit | target (Lucent, final) | Lucent s | ours s to target | "
              "ours steps to target | ours / Lucent time |", "|---|---|---|---|---|---|"]
    for r in results:
        b = r["reach"]["bound"]
        b = "" if b == "not reached" else b
        lines.append(f"| {r['layer']}:{r['unit']} | {_g(r['target'])} | "
                     f"{_g(r['lucent_seconds'])} | {b}{_g(r['reach']['seconds'])} | "
                     f"{b}{_g(r['reach']['steps'])} | {b}{_g(r['ratio'])} |")
    ratios = [r["ratio"] for r in results]
    median = statistics.median(ratios) if ratios else math.nan
    lines += ["", f"Median time ratio ours / Lucent to reach Lucent's final held-out score: "
              f"{_g(median)} (target <= 0.1), over {len(results)} units; median steps: "
              f"{_g(statistics.median(r['reach']['steps'] for r in results))}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=4, help="how many ordinary units")
    parser.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--quick", action="store_true", help="1 unit, checkpoints 2, 4, 8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write every point and the tables here")
    parser.add_argument("--plot", default="quality_curve.png", help="PNG of score vs seconds")
    parser.add_argument("--lucent-from", help="reuse Lucent's curves from this earlier --json")
    args = parser.parse_args()
    if args.quick:
        args.units, args.thresholds = 1, "2,4,8"
    if args.threads:
        torch.set_num_threads(args.threads)
    thresholds = sorted({int(t) for t in _list(args.thresholds)})
    sizes = tuple(int(s) for s in _list(args.sizes))
    device = torch.device(args.device)

    info = machine()
    print(f"# {info}", flush=True)
    model = create_model("vgg16_hed").eval().to(device)
    layers = tuple(_list(args.layers))
    units = [u for u in sample_units(model, 3 * args.units, layers, args.seed)
             if u["kind"] == "relu"][:args.units]   # unit i is ordinary when i % 3 == 0
    print("# units: " + ", ".join(f"{u['layer']}:{u['unit']}" for u in units), flush=True)
    rows = held_out_transforms()
    earlier = earlier_lucent(args.lucent_from, units, thresholds, sizes, args.seed)
    if earlier is None:
        lucent_render(lucent_model(model), units[0]["layer"], units[0]["unit"], (2,), 0)
    ours_render(model, DEFAULT_PARAM, units[0]["layer"], units[0]["unit"], (2,), 0)  # warm-up

    results = []
    for index, u in enumerate(units):
        order = ("ours", "lucent") if index % 2 == 0 else ("lucent", "ours")
        r = dict(u)
        for library in order:
            if library == "lucent" and earlier is not None:
                r["lucent"] = earlier["results"][index]["lucent"]
                continue
            r[library] = curve(model, library, u, thresholds, args.seed + index, device,
                               rows, sizes)
            last = r[library]["points"][-1]
            print(f"  {u['layer']}:{u['unit']} {library}: {last['steps']} steps in "
                  f"{last['seconds']:.1f} s, held-out {last['held_out']:.3g}", flush=True)
        r["target"] = r["lucent"]["points"][-1]["held_out"]
        r["lucent_seconds"] = r["lucent"]["points"][-1]["seconds"]
        r["reach"] = reach(r["ours"]["points"], r["target"])
        r["ratio"] = r["reach"]["seconds"] / r["lucent_seconds"]
        results.append(r)

    title = (f"vgg16_hed, {len(units)} units, {info['cpu']}, {info['threads']} threads, "
             f"torch {info['torch']}")
    text = f"{title}; checkpoints {thresholds}\n\n{report(results, thresholds)}"
    print("\n" + text)
    if args.plot:
        plot(results, args.plot, title)
        print(f"\nplot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "args": vars(args), "results": results, "table": text,
             "lucent_machine": earlier and earlier["machine"]},
            indent=1, default=str))


if __name__ == "__main__":
    main()
