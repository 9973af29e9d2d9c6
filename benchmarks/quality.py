"""Quality of renderings: every parameterisation of ours next to Lucent's defaults, scored alike.

Run from the repository root (Lucent 0.1.8 beside lucent_core, see benchmarks/README.md)::

    pip install --no-deps torch-lucent==0.1.8 && pip install ipython decorator
    python benchmarks/quality.py                        # 16 units, 512 steps, all configs
    python benchmarks/quality.py --json q.json --resume # go on after an interruption
    python benchmarks/quality.py --quick                # 2 units, 16 steps, lucent + fourier
    python benchmarks/quality.py --configs lucent,fourier,pixel --units 8 --json q.json
    python benchmarks/quality.py --merge a.json b.json  # one table from runs split by config

Model: the offline VGG16 with HED weights (``vgg16_hed``, the one trained network available
without a download).

Units (a fixed sample, the same for every configuration; ``--seed`` picks it). Unit ``i`` is
on layer ``LAYERS[i % 5]`` (block3_conv3, block4_conv1, block4_conv3, block5_conv1,
block5_conv3) and of kind ``KINDS[i % 3]``; 5 and 3 are coprime, so the first 15 units hold
every (layer, kind) pair once, and 16 units are 6 ordinary, 5 pre-ReLU and 5 dead-at-start:

  relu      an ordinary unit: the post-ReLU channel (``block4_conv3``), drawn among the units
            that are not dead at start;
  pre_relu  the same layer's convolution output before its ReLU (``block4_conv3_pre_relu``),
            drawn among all units; its value can be negative;
  dead      a post-ReLU unit that *starts dead*: its activation is exactly zero at every
            position of four start images (uniform grey at 128 and 224 px, and the initial
            image of our default Fourier parameterisation, seed 0, at 128 px and resized to
            224 px), so a plain ReLU passes it no gradient at the start of a render.

Units are drawn with ``random.Random(seed)`` from the sorted candidates, without repeats.

Configurations (all rendered in one run, each unit by every configuration in turn):

  lucent      Lucent 0.1.8's render_vis with its defaults: ``param.image(128)`` (Fourier,
              decorrelated), its standard transforms, its upsampling to 224 px, Adam 0.05, plain
              ReLU gradients (Lucent knows no redirected ReLU for a model it did not build). It
              renders a fresh copy of our model with our preprocessing in front (Lucent does
              not know this model); its hooks die with the copy.
  fourier, pixel, cppn, lowres, laplacian_pyramid
              ``render_vis`` at our defaults with ``make_param(name, 128)`` (our standard
              transforms, Adam 0.05, redirected ReLU); ``DEFAULT_PARAM`` is what
              ``render_vis`` uses when given no parameterisation (marked in the table).
  maco        ``render_maco`` (its NAdam recipe, natural spectrum, random crops, its own
              ``--maco-steps``, 256). Its defaults are sized for a GPU (512 px, 32 crops at the
              model's input size per step, several hundred times a Fourier step); here
              ``--maco-size`` px (256) with ``--maco-crops`` (4) crops of ``--maco-crop-size``
              px (128) per step, crop sides ``--maco-crop-scale`` of the image side
              (``render_maco``'s default), unless changed. Its picture after the first step
              is scored too: how far the render raises the unit.
  maco_paper  the same, with the paper's crops instead: their average side shrinking from
              50% to 5% of the image over the render (``crop_decay=PAPER_CROP_DECAY``).

Scoring, the same for every picture whichever library made it: the saved picture (rounded to
8 bits) is resized (bilinear, antialiased) to each model-input size of ``--sizes`` (128, 160,
192, 224 px); at each size the unit's value (the channel objective: its mean activation over
positions) is taken on the plain picture and averaged over the 16 held-out transforms of
``lucent_core.recipes.quality`` (rotations up to 25 degrees, zooms 0.8-1.25, shifts up to 10%,
reflected borders, brightness and contrast changes; none of them used by either library's
render). A unit prefers a scale, and the libraries render at different model-input sizes
(Lucent upsamples 128 px to 224, ours renders near 128 px), so one fixed size would favour
one library: each picture keeps its best size.

  plain      the largest plain value over the sizes;
  held-out   the largest held-out value over the sizes (the headline score);
  size       the size of that best held-out value;
  robustness held-out / plain, both at that size (NaN where the plain value is not positive);
  > 0        the fraction of units whose held-out value is above zero;
  vs Lucent  per unit, the configuration's held-out value over Lucent's (units where Lucent's
             is positive only), median over those units;
  s / render the median wall time of the library's render call alone (no scoring, no model
             copy), after one short untimed render of Lucent and of ours (first-call costs).

``--device cuda`` (the default where CUDA is available) renders and scores on the GPU.

``--merge`` renders nothing: it makes one table from the records of several ``--json`` runs
that split the configurations between them (e.g. one process per CPU core); they must have
rendered the same units with the same steps, seed and sizes (checked). Scores do not depend
on the process; *s / render* then compares runs made under their own loads (each run's
machine and threads are kept in the merged JSON).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lucent_core import objectives, param, render_vis
from lucent_core.activations import run_layers
from lucent_core.io import write_atomically
from lucent_core.models import create_model
from lucent_core.param import DEFAULT_PARAM, make_param, param_names
from lucent_core.recipes import render_maco
from lucent_core.param.maco import MACO_CROP_SCALE, MACO_STEPS, PAPER_CROP_DECAY
from lucent_core.recipes.quality import apply_held_out, held_out_transforms

LAYERS = ("block3_conv3", "block4_conv1", "block4_conv3", "block5_conv1", "block5_conv3")
KINDS = ("relu", "pre_relu", "dead")
SIZES = (128, 160, 192, 224)
MACO_CONFIGS = ("maco", "maco_paper")
# MACO here: image side, crops per step, crop side, crop scale (see the module docstring)
MACO_SETTINGS = (256, 4, 128, MACO_CROP_SCALE)
CONFIGS = ("lucent",) + tuple(param_names()) + ("maco_paper",)


# --- the unit sample ------------------------------------------------------------------------

def start_dead(model: nn.Module, layers) -> dict[str, list[int]]:
    """Per layer, the units that are zero everywhere on the four start images (see above)."""
    torch.manual_seed(0)
    init = param.image(128)().detach()
    dead = {}
    for size in (128, 224):
        grey = torch.full((1, 3, size, size), 0.5)
        start = F.interpolate(init, size=(size, size), mode="bilinear", antialias=True)
        acts = run_layers(model, torch.cat([grey, start.clamp(0, 1)]), list(layers))
        for layer in layers:
            zero = set(torch.nonzero(acts[layer].amax(dim=(0, 2, 3)) <= 0).flatten().tolist())
            dead[layer] = dead.get(layer, zero) & zero
    return {layer: sorted(units) for layer, units in dead.items()}


def sample_units(model: nn.Module, count: int, layers=LAYERS, seed: int = 0) -> list[dict]:
    """``count`` units: unit ``i`` on ``layers[i % len]`` of kind ``KINDS[i % 3]``."""
    dead = start_dead(model, layers)
    channels = {k: v.shape[1] for k, v in run_layers(model, torch.rand(1, 3, 32, 32),
                                                     list(layers)).items()}
    rng = random.Random(seed)
    taken, units = set(), []
    for i in range(count):
        layer, kind = layers[i % len(layers)], KINDS[i % len(KINDS)]
        pool = {"relu": [u for u in range(channels[layer]) if u not in dead[layer]],
                "pre_relu": list(range(channels[layer])), "dead": dead[layer]}[kind]
        pool = [u for u in pool if (layer, u) not in taken]
        if not pool:
            raise SystemExit(f"no {kind} unit left in {layer}; ask for fewer units")
        unit = rng.choice(pool)
        taken.add((layer, unit))
        target = f"{layer}_pre_relu" if kind == "pre_relu" else layer
        units.append({"layer": target, "unit": unit, "kind": kind})
    return units


# --- rendering ------------------------------------------------------------------------------

def lucent_modules():
    """Lucent 0.1.8's objectives, param and render modules, with the kornia fix applied."""
    import kornia
    import kornia.geometry.transform as KT
    kornia.get_rotation_matrix2d = KT.get_rotation_matrix2d   # moved in kornia >= 0.6
    kornia.warp_affine = KT.warp_affine
    from lucent.optvis import objectives as lobj
    from lucent.optvis import param as lparam
    from lucent.optvis import render as lrender
    return lobj, lparam, lrender


class Preprocessed(nn.Module):
    """Our model with its preprocessing in front, for Lucent (which names layers by joining
    module names with ``_``: ``net_block4_conv3``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.net.preprocessing(x))


def lucent_model(model: nn.Module) -> nn.Module:
    """A fresh copy of ``model`` for one Lucent render, preprocessing in front (Lucent's
    forward hooks stay on the copy and die with it)."""
    lucent_modules()   # imported here, outside any clock
    return Preprocessed(copy.deepcopy(model)).eval()


def lucent_render(wrapped, layer, unit, thresholds, seed):
    """Lucent's defaults on ``lucent_model(model)``: one ``(1, 3, 128, 128)`` per threshold."""
    lobj, lparam, lrender = lucent_modules()
    torch.manual_seed(seed)
    np.random.seed(seed)   # Lucent draws its transforms with NumPy
    images = lrender.render_vis(wrapped, lobj.channel("net_" + layer, unit),
                                lambda: lparam.image(128), thresholds=tuple(thresholds),
                                progress=False, show_image=False, preprocess=False)
    return as_pictures(images)


def as_pictures(images) -> list[torch.Tensor]:
    """Rendered ``(1, H, W, 3)`` arrays (either library's) as ``(1, 3, H, W)`` float tensors."""
    return [torch.from_numpy(np.ascontiguousarray(i)).permute(0, 3, 1, 2).float()
            for i in images]


def ours_render(model, config, layer, unit, thresholds, seed, maco=MACO_SETTINGS):
    """Our render of ``config`` at our defaults: one ``(1, 3, H, W)`` per threshold."""
    objective = objectives.channel(layer, unit)
    if config in MACO_CONFIGS:
        size, crops, crop_size, crop_scale = maco
        crop_sides = ({"crop_scale": crop_scale} if config == "maco"
                      else {"crop_decay": PAPER_CROP_DECAY})
        result = render_maco(model, objective, w=size, thresholds=tuple(thresholds),
                             n_crops=crops, crop_size=crop_size, seed=seed, progress=False,
                             **crop_sides)
    else:
        result = render_vis(model, objective, lambda: make_param(config, 128),
                            thresholds=tuple(thresholds), seed=seed, progress=False)
    return as_pictures(result.images)


def render(model, config, layer, unit, thresholds, seed, maco=MACO_SETTINGS):
    """The pictures of ``config`` after each of ``thresholds`` steps (one render) and the
    render's wall time (the call to the library's render function only)."""
    wrapped = lucent_model(model) if config == "lucent" else None
    started = time.perf_counter()
    if config == "lucent":
        pictures = lucent_render(wrapped, layer, unit, thresholds, seed)
    else:
        pictures = ours_render(model, config, layer, unit, thresholds, seed, maco)
    return pictures, time.perf_counter() - started


# --- scoring --------------------------------------------------------------------------------

def score(model, picture: torch.Tensor, layer: str, unit: int, sizes=SIZES,
          rows: torch.Tensor | None = None) -> dict:
    """Best-scale plain and held-out values of ``picture`` (``(1, 3, H, W)`` in [0, 1])."""
    rows = held_out_transforms() if rows is None else rows
    device = next(model.parameters()).device
    saved = ((picture.clamp(0, 1) * 255).round() / 255).to(device)
    plain, held = {}, {}
    for size in sizes:
        x = F.interpolate(saved, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False).clamp(0, 1)
        batch = torch.cat([x, apply_held_out(x, rows)])
        values = run_layers(model, batch, [layer])[layer][:, unit].mean(dim=(1, 2)).double()
        plain[size], held[size] = float(values[0]), float(values[1:].mean())
    best = max(sizes, key=lambda s: held[s])
    robust = held[best] / plain[best] if plain[best] > 0 else math.nan
    return {"plain": max(plain.values()), "held_out": held[best], "size": best,
            "robustness": robust, "plain_by_size": plain, "held_out_by_size": held}


# --- report ---------------------------------------------------------------------------------

def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version
        lucent = version("torch-lucent")
    except Exception:  # noqa: BLE001 - not installed
        lucent = None
    if torch.cuda.is_available():
        cpu += f"; GPU {torch.cuda.get_device_name()}"
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "lucent": lucent, "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def _stat(values, how):
    values = [v for v in values if v is not None and not math.isnan(v)]
    return how(values) if values else math.nan


def summarise(records: list[dict], configs) -> list[dict]:
    """One row per configuration (see the module docstring for the columns)."""
    lucent = {r["index"]: r["held_out"] for r in records if r["config"] == "lucent"}
    rows = []
    for config in configs:
        mine = [r for r in records if r["config"] == config]
        if not mine:
            continue
        ratios = [r["held_out"] / lucent[r["index"]] for r in mine
                  if lucent.get(r["index"], 0) > 0]
        sizes = [r["size"] for r in mine]
        rows.append({
            "config": config, "units": len(mine),
            "plain_median": _stat([r["plain"] for r in mine], statistics.median),
            "plain_mean": _stat([r["plain"] for r in mine], statistics.mean),
            "held_out_median": _stat([r["held_out"] for r in mine], statistics.median),
            "held_out_mean": _stat([r["held_out"] for r in mine], statistics.mean),
            "robustness_median": _stat([r["robustness"] for r in mine], statistics.median),
            "positive": sum(r["held_out"] > 0 for r in mine) / len(mine),
            "sizes": {s: sizes.count(s) for s in sorted(set(sizes))},
            "vs_lucent_median": _stat(ratios, statistics.median), "vs_lucent_units": len(ratios),
            "seconds_median": statistics.median(r["seconds"] for r in mine)})
    return rows


def _g(x, digits=3):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def table(rows: list[dict]) -> str:
    lines = ["| config | plain median | plain mean | held-out median | held-out mean | "
             "robustness median | held-out > 0 | best size (count) | held-out vs Lucent "
             "(median, units) | s / render |", "|" + "---|" * 10]
    for r in rows:
        sizes = " ".join(f"{s}:{n}" for s, n in r["sizes"].items())
        name = r["config"] + (" (default)" if r["config"] == DEFAULT_PARAM else "")
        lines.append(
            f"| {name} | {_g(r['plain_median'])} | {_g(r['plain_mean'])} | "
            f"{_g(r['held_out_median'])} | {_g(r['held_out_mean'])} | "
            f"{_g(r['robustness_median'])} | {r['positive']:.2f} | {sizes} | "
            f"{_g(r['vs_lucent_median'])} ({r['vs_lucent_units']}) | "
            f"{r['seconds_median']:.1f} |")
    return "\n".join(lines)


def kind_table(records: list[dict], configs) -> str:
    """Median held-out value per configuration and unit kind."""
    kinds = [k for k in KINDS if any(r["kind"] == k for r in records)]
    lines = ["| config | " + " | ".join(f"held-out median, {k}" for k in kinds) + " |",
             "|" + "---|" * (len(kinds) + 1)]
    for config in configs:
        cells = [_g(_stat([r["held_out"] for r in records
                           if r["config"] == config and r["kind"] == k], statistics.median))
                 for k in kinds]
        if any(r["config"] == config for r in records):
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(records: list[dict], summary: list[dict], configs, units: int, steps: int,
           sizes) -> str:
    """The printed tables: ``summary`` (from :func:`summarise`), by kind, MACO's rise."""
    text = (f"vgg16_hed, {units} units, {steps} steps (MACO: its own step count); scored at "
            f"{tuple(sizes)} px, best size per picture, 16 held-out transforms\n\n"
            f"{table(summary)}\n\n{kind_table(records, configs)}")
    for config in MACO_CONFIGS:
        first = [r for r in records if "first_step_held_out" in r and r["config"] == config]
        if not first:
            continue
        rise = [r["held_out"] / r["first_step_held_out"] for r in first
                if r["first_step_held_out"] > 0]
        text += (f"\n\n{config}, held-out median after 1 step "
                 f"{_g(statistics.median(r['first_step_held_out'] for r in first))}, after "
                 f"{first[0]['steps']} steps {_g(statistics.median(r['held_out'] for r in first))}"
                 f"; per unit, final over first: median {_g(_stat(rise, statistics.median))}"
                 f" ({len(rise)} units with a positive first value)")
    return text


def comparable(a: dict, b: dict) -> bool:
    """Whether two runs' ``args`` score alike: the same steps, seed and sizes, and the same
    MACO steps where both rendered MACO (runs from before ``--maco-steps`` lack it)."""
    def key(args: dict) -> tuple:
        return args["steps"], args["seed"], args["sizes"]
    both_maco = all(set(_list(args["configs"])) & set(MACO_CONFIGS) for args in (a, b))
    return key(a) == key(b) and (not both_maco or a.get("maco_steps") == b.get("maco_steps"))


def merge(paths: list[str], out: str | None) -> None:
    """One table from several runs' ``--json`` files (see the module docstring)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    units = max((r["units"] for r in runs), key=len)
    if any(not comparable(r["args"], runs[0]["args"]) or r["units"] != units[:len(r["units"])]
           for r in runs):
        raise SystemExit("the runs rendered other units, steps, seeds or sizes: not merged")
    records = [rec for run in runs for rec in run["records"]]
    configs = [c for c in CONFIGS if any(rec["config"] == c for rec in records)]
    sizes = [int(s) for s in _list(runs[0]["args"]["sizes"])]
    summary = summarise(records, configs)
    text = report(records, summary, configs, len(units), runs[0]["args"]["steps"], sizes)
    print(text)
    if out:
        Path(out).write_text(json.dumps(
            {"merged": paths, "machines": [r["machine"] for r in runs],
             "args": [r["args"] for r in runs], "units": units, "records": records,
             "summary": summary, "table": text}, indent=1, default=str))


def resumed(path: str | None, units: list[dict], args) -> list[dict]:
    """The records of an earlier (interrupted) run in ``path``, if it rendered the same units
    with the same steps, seed and sizes; none when there is no such file."""
    if not path or not Path(path).exists():
        return []
    earlier = json.loads(Path(path).read_text())
    if earlier["units"] != units or not comparable(earlier["args"], vars(args)):
        raise SystemExit(f"{path} holds another run (units, steps, seed or sizes differ)")
    return earlier["records"]


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--units", type=int, default=16, help="how many units (see above)")
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, from {','.join(CONFIGS)}")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="model-input sizes every picture is scored at")
    parser.add_argument("--maco-size", type=int, default=MACO_SETTINGS[0])
    parser.add_argument("--maco-crops", type=int, default=MACO_SETTINGS[1])
    parser.add_argument("--maco-crop-size", type=int, default=MACO_SETTINGS[2])
    parser.add_argument("--maco-crop-scale", default=",".join(map(str, MACO_CROP_SCALE)),
                        help="MACO's crop side range over the image side (paper's: 0.05,0.5)")
    parser.add_argument("--maco-steps", type=int, default=MACO_STEPS,
                        help=f"MACO's steps (its own default, {MACO_STEPS})")
    parser.add_argument("--quick", action="store_true",
                        help="2 units, 16 steps, configs lucent and fourier")
    parser.add_argument("--seed", type=int, default=0, help="unit sample and render seeds")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write units, every score and the table here")
    parser.add_argument("--resume", action="store_true",
                        help="keep the pictures already scored in --json (same units and "
                             "settings) and render the rest")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="render nothing: one table from these earlier --json runs")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.json)

    def save(content: dict) -> None:
        text = json.dumps(content, indent=1, default=str)
        write_atomically(args.json, lambda tmp: tmp.write_text(text))
    if args.quick:
        args.units, args.steps, args.maco_steps, args.configs = 2, 16, 16, "lucent,fourier"
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = _list(args.configs)
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {CONFIGS}")
    sizes = tuple(int(s) for s in _list(args.sizes))
    maco = (args.maco_size, args.maco_crops, args.maco_crop_size,
            tuple(float(s) for s in _list(args.maco_crop_scale)))

    info = machine()
    print(f"# {info}", flush=True)
    model = create_model("vgg16_hed").eval().to(args.device)
    units = sample_units(model, args.units, tuple(_list(args.layers)), args.seed)
    print("# units: " + ", ".join(f"{u['layer']}:{u['unit']} ({u['kind']})" for u in units),
          flush=True)
    rows_t = held_out_transforms()
    first = units[0]
    render(model, "lucent", first["layer"], first["unit"], (2,), 0)   # warm-up, untimed
    render(model, "fourier", first["layer"], first["unit"], (2,), 0)
    records = resumed(args.json, units, args) if args.resume else []
    done = {(r["index"], r["config"]) for r in records}
    for index, u in enumerate(units):
        for config in configs:  # each unit by every config in turn: load drift hits all alike
            if (index, config) in done:
                continue
            steps = args.maco_steps if config in MACO_CONFIGS else args.steps
            # MACO also after its first step: how far the render raises the unit
            thresholds = (1, steps) if config in MACO_CONFIGS else (steps,)
            pictures, seconds = render(model, config, u["layer"], u["unit"], thresholds,
                                       args.seed + index, maco)
            picture = pictures[-1]
            s = score(model, picture, u["layer"], u["unit"], sizes, rows_t)
            if config in MACO_CONFIGS:
                s["first_step_held_out"] = score(model, pictures[0], u["layer"], u["unit"],
                                                 sizes, rows_t)["held_out"]
            records.append({"index": index, **u, "config": config, "steps": steps,
                            "seconds": seconds,
                            "picture_size": list(picture.shape[2:]), **s})
            print(f"  {u['layer']}:{u['unit']} {config}: plain {s['plain']:.3g}, held-out "
                  f"{s['held_out']:.3g} at {s['size']} px, {seconds:.1f} s", flush=True)
            if args.json:   # after every picture: an interrupted run keeps what it scored
                save({"machine": info, "args": vars(args), "units": units, "records": records})

    summary = summarise(records, configs)
    text = report(records, summary, configs, len(units), args.steps, sizes)
    print("\n" + text)
    if args.json:
        save({"machine": info, "args": vars(args), "units": units, "records": records,
              "summary": summary, "table": text})


if __name__ == "__main__":
    main()
