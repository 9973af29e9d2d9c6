"""The search behind the render defaults: one variant of the default recipe, scored on a few units.

Run from the repository root, one variant per call (see benchmarks/README.md, "Tuning")::

    python benchmarks/tune_defaults.py --lucent lucent16.json --param fourier   # the old default
    python benchmarks/tune_defaults.py --lucent lucent16.json --lr 0.2 --scales 0.8,1.25 --angle 20
    python benchmarks/tune_defaults.py --lucent lucent16.json --param laplacian_pyramid

Each unit (``--units``: indices into the sample of ``benchmarks/quality.py``) is rendered once
with ``render_vis`` and the variant (parameterisation at 128 px, Adam at ``--lr`` with an
optional ``--schedule``, ``RandomAffine`` with the given ranges: 11 scales evenly over
``--scales``, whole-degree angles uniform in ``-angle..angle``; the library's
``standard_affine`` draws 0 degrees more often; ``--copies`` draws of it per step, the
result resized by ``--upsample`` before the model; ``--no-decorrelate``, ``--plain-relu``;
``--ema`` also scores the picture of a moving average of the parameters); the pictures at
``--steps`` get ``quality.py``'s best-scale held-out score, divided by Lucent's 512-step score
of the same unit from a ``quality.py --configs lucent --json`` run (``--lucent``). Printed:
per unit and the medians over units.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from quality import _list, as_pictures, sample_units, score
from lucent_core import objectives, render_vis
from lucent_core.models import create_model
from lucent_core.param import laplacian_pyramid_image, make_param
from lucent_core.recipes.quality import held_out_transforms
from lucent_core.transforms import RandomAffine

SCHEDULES = {"constant": lambda f: 1.0, "cosine": lambda f: 0.5 * (1 + math.cos(math.pi * f)),
             "linear": lambda f: 1 - f}


def scheduled_adam(lr: float, total: int, schedule: str):
    """An optimiser factory: Adam whose rate after step ``s`` is ``lr`` times
    ``SCHEDULES[schedule](s / total)``, at least 2% of ``lr``."""
    def make(params):
        opt = torch.optim.Adam(params, lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: max(SCHEDULES[schedule](s / total), 0.02))
        opt.register_step_post_hook(lambda *_: scheduler.step())
        return opt
    return make


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lucent", required=True, help="quality.py --configs lucent --json file")
    p.add_argument("--param", default="fourier", help="a registered parameterisation")
    p.add_argument("--levels", type=int, help="laplacian_pyramid levels (its default)")
    p.add_argument("--level-weight", type=float, help="laplacian_pyramid (its default)")
    p.add_argument("--mode", help="laplacian_pyramid: sigmoid or clamp (its default)")
    p.add_argument("--sd", type=float, help="laplacian_pyramid: start noise (its default)")
    p.add_argument("--no-decorrelate", action="store_true",
                   help="plain RGB instead of decorrelated colour")
    p.add_argument("--plain-relu", action="store_true",
                   help="ReLU's own gradient instead of Lucid's redirected ReLU")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", default="constant", choices=sorted(SCHEDULES))
    p.add_argument("--scales", default="0.9,1.1", help="min,max of the random scale")
    p.add_argument("--angle", type=int, default=10, help="largest rotation, degrees")
    p.add_argument("--upsample", type=float, default=1.0,
                   help="resize the transformed picture by this factor before the model "
                        "(Lucent's 128 -> 224 px is 1.75)")
    p.add_argument("--copies", type=int, default=1,
                   help="transform draws of the picture per step (the objective averages them)")
    p.add_argument("--steps", default="128,256", help="checkpoints")
    p.add_argument("--units", default="0,1,2,3,6,9", help="indices into quality.py's sample")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ema", default="",
                   help="comma-separated decays: also score, at the last checkpoint, the "
                        "picture of an exponential moving average of the parameters (same render)")
    args = p.parse_args()
    pyramid = {key: value for key, value in (("levels", args.levels), ("sd", args.sd),
                                             ("level_weights", args.level_weight),
                                             ("mode", args.mode)) if value is not None}
    if pyramid and args.param != "laplacian_pyramid":
        p.error(f"{sorted(pyramid)} shape a laplacian_pyramid, not --param {args.param}")
    torch.set_num_threads(args.threads)
    lucent = json.loads(Path(args.lucent).read_text())
    targets = {r["index"]: r["held_out"] for r in lucent["records"] if r["config"] == "lucent"}
    model = create_model("vgg16_hed").eval()
    units = sample_units(model, max(int(i) for i in _list(args.units)) + 1)
    steps = sorted(int(s) for s in _list(args.steps))
    low, high = (float(s) for s in _list(args.scales))
    affine = RandomAffine(scales=[low + (high - low) * i / 10 for i in range(11)],
                          angles=list(range(-args.angle, args.angle + 1)))

    def transforms(x):
        x = affine(x.repeat(args.copies, 1, 1, 1))
        if args.upsample == 1:
            return x
        return F.interpolate(x, scale_factor=args.upsample, mode="bilinear", antialias=True)
    decays = [float(d) for d in _list(args.ema)]
    averages: dict[float, list[torch.Tensor]] = {}   # of the current render's parameters

    def make():
        if pyramid:
            return laplacian_pyramid_image(128, decorrelate=not args.no_decorrelate, **pyramid)
        return make_param(args.param, 128, decorrelate=not args.no_decorrelate)

    def optimiser(params):
        opt = scheduled_adam(args.lr, steps[-1], args.schedule)(params)
        tensors = [t for group in opt.param_groups for t in group["params"]]
        averages.clear()
        averages.update({d: [t.detach().clone() for t in tensors] for d in decays})

        def update(*_):
            with torch.no_grad():
                for d, average in averages.items():
                    for a, t in zip(average, tensors):
                        a.mul_(d).add_(t, alpha=1 - d)
        opt.register_step_post_hook(update)
        return opt

    def averaged_picture(param, decay: float) -> torch.Tensor:
        """The picture of ``param`` with its averaged parameters (its own put back)."""
        tensors = [t for t in param.parameters() if t.requires_grad]
        kept = [t.detach().clone() for t in tensors]
        with torch.no_grad():
            for t, a in zip(tensors, averages[decay]):
                t.copy_(a)
            picture = param().detach().float().cpu()
            for t, k in zip(tensors, kept):
                t.copy_(k)
        return picture
    kinds = steps + [f"ema {d}" for d in decays]
    rows, ratios = held_out_transforms(), {k: [] for k in kinds}
    robust = {k: [] for k in kinds}
    for i in (int(i) for i in _list(args.units)):
        u = units[i]
        result = render_vis(model, objectives.channel(u["layer"], u["unit"]), make,
                            optimizer=optimiser, redirected_relu=not args.plain_relu,
                            transforms=transforms, thresholds=steps, seed=i, progress=False)
        pictures = list(zip(result.thresholds, as_pictures(result.images)))
        pictures += [(f"ema {d}", averaged_picture(result.param, d)) for d in decays]
        cells = []
        for kind, picture in pictures:
            s = score(model, picture, u["layer"], u["unit"], rows=rows)
            ratio = s["held_out"] / targets[i] if targets.get(i, 0) > 0 else math.nan
            ratios[kind].append(ratio)
            robust[kind].append(s["robustness"])
            label = kind if kind in steps else f"{steps[-1]}, average {kind[4:]}"
            cells.append(f"{label}: {s['held_out']:.3g} ({ratio:.2f} of Lucent's, robustness "
                         f"{s['robustness']:.2f})")
        print(f"{u['layer']}:{u['unit']} ({u['kind']}) " + "; ".join(cells), flush=True)
    for n in kinds:
        finite = [r for r in ratios[n] if not math.isnan(r)]
        print(f"{n} steps: held-out / Lucent's 512-step score, median "
              f"{statistics.median(finite):.3f} over {len(finite)} units; robustness, median "
              f"{statistics.median(r for r in robust[n] if not math.isnan(r)):.2f}")


if __name__ == "__main__":
    main()
