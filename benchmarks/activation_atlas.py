"""Time of each step of an activation atlas, and what 100k vectors or ImageNet would take.

Run from the repository root::

    python benchmarks/activation_atlas.py                  # vgg16_hed block4_conv3 (offline)
    python benchmarks/activation_atlas.py --quick          # small sizes: a few minutes on 2 cores
    python benchmarks/activation_atlas.py --device cuda    # on a GPU (the default when one exists)
    python benchmarks/activation_atlas.py --model inceptionv1 --random-weights --layer mixed4c
    python benchmarks/activation_atlas.py --layout-sizes 10000,30000,100000 --out-json atlas.json

Each step of :mod:`lucent_core.recipes.activation_atlas` is timed on its own, on a folder of
generated JPEG photos (``--images`` of them, 500 x 375 like most ImageNet photos: random crops
of the scikit-image sample photos, flipped and colour-jittered; random smooth textures when
scikit-image is absent):

1. collection: ``collect_activations`` (224 px, 8 vectors per image, batch 32, ``--workers``
   image readers), after a warm-up call; beside it the two things it overlaps, each alone:
   reading (decode + resize in the DataLoader workers, no model) and the model (what the
   collection runs per batch, on random pixels already on the device);
2. layout: UMAP (umap-learn, cosine, seeded as the recipe does) and PCA of ``--layout-sizes``
   vectors. The vectors are real: a second collection keeps up to ``ceil(largest / images)``
   vectors per image (at most the layer's positions); if that is still too few, the rest are
   interpolations ``(1 - t) a + t b`` between two vectors of one image (``t`` uniform in
   [0, 1]). Each size is a random subset of that pool. Each method's first call in the
   process (UMAP: numba compiles, about 10 s; PCA: MKL loads) is timed apart, on 500 vectors.
   UMAP runs once per size; PCA, being quick, is the median of three calls (on a loaded
   machine a multi-threaded call sometimes stalls for seconds);
3. binning: ``bin_cells`` of each UMAP layout into 20 x 20 cells (min_count 3, median of
   three), and ``plan_cells`` of the step-1 collection from disk;
4. rendering: ``render_cells`` of 16 cells (one batch) at 80 px, after a warm-up call, with
   ``--render-steps`` n and 2n steps: a step costs ``(T(2n) - T(n)) / n`` (fixed costs cancel),
   the rest of ``T(n)`` is the batch's fixed cost (files, records);
5. page: ``assemble`` of those 16 cells.

Then the estimates, labelled as such: a 20 x 20 atlas of 100k vectors (12,500 images at 8 per
image, 512 steps per cell, all 400 cells: an upper bound, sparse cells are skipped) on this
device; and ImageNet (1,281,167 images, one vector per image) with ``--gpus`` GPUs. On a GPU
run the ImageNet figures come from what was measured on that GPU; on a CPU run from the CPU's
measurements divided by ``--gpu-speedup``, an assumed ratio (no GPU measurement is recorded in
benchmarks/README.md yet), which the output states. The collection runs in one process on
one GPU (only the renders are sharded), limited by the slower of the model and the image
readers (the per-worker reading rate measured here times ``--host-workers``); UMAP runs on
one CPU core wherever the model runs (seeded umap-learn is single-threaded).

Prints the machine, a markdown table of the measurements and one of the estimates;
``--out-json PATH`` writes all of it too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import DataLoader

from lucent_core.hooks import frozen, resolve_layer
from lucent_core.image_folder import ImageFiles, collate_images, image_files
from lucent_core.models import create_model
from lucent_core.preprocessing import preprocessing_of
from lucent_core.recipes.activation_atlas import (assemble, bin_cells, collect_activations,
                                                  layout_atlas, load_vectors, plan_cells,
                                                  render_cells)
# what collect_activations runs on each batch (forward, and the class backwards of classifiers)
from lucent_core.recipes.activation_atlas.collect import _class_count, _read_batch
from lucent_core.recipes.activation_atlas.layout import layout
from lucent_core.units import layer_shapes
from lucent_core.version import __version__

IMAGE_SIZE = 224
PER_IMAGE = 8
BATCH = 32
GRID = 20
MIN_COUNT = 3
RENDER_BATCH = 16
RENDER_SIZE = 80
STEPS = 512
PHOTO_SIDES = ((500, 375), (375, 500))  # landscape three times in four, as in ImageNet
ATLAS_VECTORS = 100_000
IMAGENET_IMAGES = 1_281_167  # ILSVRC-2012 training set
DEFAULT_LAYERS = {"vgg16_hed": "block4_conv3", "inceptionv1": "mixed4c"}


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --- machine --------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _machine(device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                          capture_output=True, text=True, check=True).stdout.strip():
            commit += " + uncommitted changes"
    except (OSError, subprocess.CalledProcessError):
        commit = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "umap_learn": _version("umap-learn"), "numba": _version("numba"),
            "lucent_core": __version__, "commit": commit}


# --- the photos -----------------------------------------------------------------------------

def _sample_photos() -> list[Image.Image]:
    try:
        import skimage
    except ImportError:
        return []
    folder = Path(skimage.__file__).parent / "data"
    return [Image.open(path).convert("RGB") for path in sorted(folder.iterdir())
            if path.suffix in (".png", ".jpg") and "chessboard" not in path.stem]


def _crop(source: Image.Image, side: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A random crop of ``side``'s aspect (40-100 % of the largest), resized, flipped, jittered."""
    width, height = source.size
    scale = min(width / side[0], height / side[1]) * rng.uniform(0.4, 1.0)
    w, h = max(1, round(side[0] * scale)), max(1, round(side[1] * scale))
    left, top = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
    picture = source.crop((left, top, left + w, top + h)).resize(side, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    picture = ImageEnhance.Color(picture).enhance(rng.uniform(0.6, 1.4))
    return ImageEnhance.Brightness(picture).enhance(rng.uniform(0.8, 1.2))


def _texture(side: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Smooth random colours with some fine grain."""
    coarse = Image.fromarray(rng.integers(0, 256, (side[1] // 40 + 2, side[0] // 40 + 2, 3),
                                          dtype=np.uint8))
    smooth = np.asarray(coarse.resize(side, Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.integers(-20, 21, smooth.shape, dtype=np.int16)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def write_photos(folder: Path, count: int, seed: int) -> str:
    """``count`` JPEG photos in ``folder``; returns what they are, in words."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    sources = _sample_photos()
    for i in range(count):
        side = PHOTO_SIDES[int(rng.random() < 0.25)]
        picture = _crop(sources[i % len(sources)], side, rng) if sources else _texture(side, rng)
        picture.save(folder / f"{i:05d}.jpg", quality=90)
    kind = (f"random crops of the {len(sources)} scikit-image sample photos"
            if sources else "random smooth textures (scikit-image is not installed)")
    size = sum(path.stat().st_size for path in folder.iterdir()) / count / 1024
    return f"{count} generated JPEG photos, 500 x 375 or 375 x 500 ({kind}), {size:.0f} KiB each"


# --- the measurements -----------------------------------------------------------------------

def measure_collection(model, folder: Path, out: Path, layer: str, per_image: int,
                       workers: int) -> dict:
    files = len(image_files(folder))
    summary = collect_activations(model, folder, out, layer, samples=files * per_image,
                                  per_image=per_image, image_size=IMAGE_SIZE, batch=BATCH,
                                  workers=workers, progress=False)
    return {"images": summary.processed, "vectors": summary.count, "seconds": summary.seconds,
            "images_per_s": summary.processed / summary.seconds,
            "vectors_per_s": summary.count / summary.seconds}


def measure_reading(folder: Path, workers: int) -> dict:
    files = image_files(folder)
    started = time.perf_counter()
    loader = DataLoader(ImageFiles(folder, files, IMAGE_SIZE), batch_size=BATCH,
                        num_workers=workers, collate_fn=collate_images)
    for _ in loader:
        pass
    seconds = time.perf_counter() - started
    return {"images": len(files), "seconds": seconds, "images_per_s": len(files) / seconds,
            "workers": workers}


def measure_model(model, layer: str, device: torch.device, repeats: int) -> dict:
    """What the collection runs per batch, on random pixels already on the device."""
    preprocess = preprocessing_of(model)
    _, height, width = layer_shapes(model, [layer], IMAGE_SIZE, preprocess)[layer]
    classes = _class_count(model, IMAGE_SIZE, preprocess, 5)  # collect_activations' default
    module = dict(model.named_modules())[resolve_layer(model, layer)] if classes else None
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator).to(device)
    where = torch.stack([torch.randperm(height * width, generator=generator)[:PER_IMAGE]
                         for _ in range(BATCH)])
    with frozen(model):
        _read_batch(model, module, layer, x, preprocess, where, classes)  # warm-up
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            _read_batch(model, module, layer, x, preprocess, where, classes)
        _sync(device)
    seconds = time.perf_counter() - started
    return {"images": BATCH * repeats, "seconds": seconds,
            "images_per_s": BATCH * repeats / seconds, "classes": classes}


def vector_pool(out: Path, total: int, seed: int) -> tuple[np.ndarray, int]:
    """``total`` float16 vectors: the collected ones, then interpolations within an image."""
    collected = load_vectors(out)
    vectors = np.asarray(collected.vectors)
    extra = total - len(vectors)
    if extra <= 0:
        return vectors, 0
    files = np.asarray(collected.origins[:, 0])
    order = np.argsort(files, kind="stable")
    vectors, files = vectors[order], files[order]
    rng = np.random.default_rng(seed)
    a = rng.integers(len(vectors), size=extra)
    start = np.searchsorted(files, files[a], "left")
    stop = np.searchsorted(files, files[a], "right")
    b = start + (rng.random(extra) * (stop - start)).astype(np.int64)
    t = rng.random((extra, 1), dtype=np.float32)
    mixed = (1 - t) * vectors[a].astype(np.float32) + t * vectors[b].astype(np.float32)
    return np.concatenate([vectors, mixed.astype(np.float16)]), extra


def _median_seconds(job, repeats: int) -> tuple[float, object]:
    """The median wall time of ``repeats`` calls of ``job`` and the last call's result."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        found = job()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2], found


def measure_layouts(pool: np.ndarray, sizes: list[int], use_umap: bool, seed: int) -> list:
    """UMAP once per size (after a first call on 500 vectors); PCA and binning, being quick,
    the median of three (a loaded machine's threads sometimes stall one call)."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in ("pca", "umap") if use_umap else ("pca",):
        started = time.perf_counter()
        layout(pool[:500], method, seed=seed)
        rows.append({"method": f"{method} first call", "vectors": 500,
                     "seconds": time.perf_counter() - started})
    for size in sizes:
        sample = pool[np.sort(rng.choice(len(pool), size, replace=False))]
        for method in ("pca", "umap") if use_umap else ("pca",):
            say(f"layout: {method} of {size} vectors ...")
            seconds, points = _median_seconds(lambda: layout(sample, method, seed=seed),
                                              1 if method == "umap" else 3)
            rows.append({"method": method, "vectors": size, "seconds": seconds})
            if method == ("umap" if use_umap else "pca"):
                binned, cells = _median_seconds(
                    lambda: bin_cells(points, sample, GRID, MIN_COUNT), 3)
                rows[-1].update(bin_seconds=binned, cells=len(cells))
    return rows


def _sub_plan(out: Path, cells, count: int, name: str) -> None:
    """The first ``count`` cells of the plan as a plan of their own, in ``out / name``."""
    part = replace(cells, rows=cells.rows[:count], cols=cells.cols[:count],
                   counts=cells.counts[:count], vectors=cells.vectors[:count],
                   top_classes=cells.top_classes[:count], nearest=cells.nearest[:count])
    (out / name).mkdir()
    np.save(out / name / "cell_vectors.npy", part.vectors)
    (out / name / "cells.json").write_text(json.dumps(part.to_json()))


def measure_render(model, out: Path, layer: str, steps: int) -> dict:
    layout_atlas(out, "pca", progress=False)
    started = time.perf_counter()
    cells = plan_cells(out, GRID, 1)
    plan_seconds = time.perf_counter() - started
    count = min(RENDER_BATCH, len(cells))
    seconds = {}
    for name, n in (("warm", 2), ("single", steps), ("double", 2 * steps)):
        _sub_plan(out, cells, count, name)
        say(f"render: {count} cells, {n} steps ...")
        started = time.perf_counter()
        render_cells(model, out, layer, steps=n, size=RENDER_SIZE, batch=RENDER_BATCH,
                     progress=False, subdir=name)
        seconds[n if name != "warm" else 0] = time.perf_counter() - started
    step = (seconds[2 * steps] - seconds[steps]) / steps
    if step <= 0:  # disturbed: every step's share of the longer call instead (an upper bound)
        step = seconds[2 * steps] / (2 * steps)
    started = time.perf_counter()
    assemble(out, subdir="double")
    page = time.perf_counter() - started
    return {"cells": count, "steps": [steps, 2 * steps],
            "seconds": [seconds[steps], seconds[2 * steps]], "step_s": step,
            "step_per_cell_s": step / count,
            "batch_fixed_s": max(0.0, seconds[steps] - steps * step),
            "plan_vectors": int(cells.counts.sum()), "plan_seconds": plan_seconds,
            "page_seconds": page, "page_per_cell_s": page / count}


# --- the estimates --------------------------------------------------------------------------

def scaled(measured: dict[int, float], size: int) -> tuple[float, str]:
    """Seconds at ``size`` from seconds at some sizes: measured, or a power law through the
    two largest (exponent at least 1), or linear from one size."""
    if size in measured:
        return measured[size], f"measured at {size:,}"
    sizes = sorted(measured)
    if len(sizes) == 1:
        return measured[sizes[0]] * size / sizes[0], f"linear from {sizes[0]:,}"
    a, b = sizes[-2], sizes[-1]
    power = max(1.0, math.log(measured[b] / measured[a]) / math.log(b / a))
    return measured[b] * (size / b) ** power, f"N^{power:.2f} from {a:,} and {b:,}"


def _render_time(render: dict, cells: int, steps: int, gpus: int, speedup: float) -> float:
    batches = math.ceil(math.ceil(cells / RENDER_BATCH) / gpus)
    return batches * (steps * render["step_s"] / speedup + render["batch_fixed_s"])


def estimates(results: dict, args) -> dict:
    gpu_run = results["machine"]["device"].startswith("cuda")
    collect, reading, model = (results["collect"], results["reading"], results["model"])
    render = results["render"]
    umap = {row["vectors"]: row["seconds"] for row in results["layout"]
            if row["method"] == "umap"}
    pca = {row["vectors"]: row["seconds"] for row in results["layout"] if row["method"] == "pca"}
    bins = {row["vectors"]: row["bin_seconds"] for row in results["layout"]
            if row["method"] == ("umap" if umap else "pca")}
    layout_name, layout_times = ("UMAP", umap) if umap else ("PCA (umap-learn absent)", pca)
    here = results["machine"]["gpu"] or f"CPU, {results['machine']['usable_cores']} cores"

    images = math.ceil(ATLAS_VECTORS / PER_IMAGE)
    small = [("collect", images / collect["images_per_s"],
              f"{images:,} images at the measured {collect['images_per_s']:.1f} images/s")]
    seconds, how = scaled(layout_times, ATLAS_VECTORS)
    small.append((f"layout ({layout_name})", seconds, how))
    seconds, how = scaled(bins, ATLAS_VECTORS)
    small.append(("bin", seconds, how))
    small.append(("render", _render_time(render, GRID * GRID, STEPS, 1, 1.0),
                  f"{GRID * GRID} cells (upper bound) x {STEPS} steps in batches of "
                  f"{RENDER_BATCH}, at the measured {render['step_per_cell_s']:.3g} s per "
                  f"step per cell + {render['batch_fixed_s']:.2g} s per batch"))
    small.append(("page", GRID * GRID * render["page_per_cell_s"],
                  f"{GRID * GRID} cells at the measured {render['page_per_cell_s']:.2g} s/cell"))

    speedup = 1.0 if gpu_run else args.gpu_speedup
    model_rate = model["images_per_s"] * speedup
    reading_rate = reading["images_per_s"] / reading["workers"] * args.host_workers
    if gpu_run:
        source = f"measured on this GPU ({here})"
        assumption = "none: the model and render rates were measured on this GPU"
    else:
        source = f"CPU measurement x {speedup:g} (assumed)"
        assumption = (f"a GPU runs the model and the renders {speedup:g}x faster than this "
                      f"CPU ({here}): an assumption (--gpu-speedup), not measured; "
                      "benchmarks/README.md has no GPU measurement yet")
    rate = min(model_rate, reading_rate)
    bound = "the model" if model_rate <= reading_rate else "reading the images"
    large = [("collect", IMAGENET_IMAGES / rate,
              f"{IMAGENET_IMAGES:,} images at {rate:.0f} images/s on one GPU, bound by {bound} "
              f"(model {model_rate:.0f} images/s: {source}; reading {reading_rate:.0f} "
              f"images/s: {args.host_workers} workers at the measured per-worker rate)")]
    seconds, how = scaled(layout_times, IMAGENET_IMAGES)
    large.append((f"layout ({layout_name}, CPU)", seconds, f"{IMAGENET_IMAGES:,} vectors, {how}"))
    seconds, how = scaled(bins, IMAGENET_IMAGES)
    large.append(("bin (CPU)", seconds, how))
    large.append(("render", _render_time(render, GRID * GRID, STEPS, args.gpus, speedup),
                  f"{GRID * GRID} cells x {STEPS} steps sharded over {args.gpus} GPUs; {source}"))
    large.append(("page (CPU)", GRID * GRID * render["page_per_cell_s"], "as above"))

    def table(rows):
        return {"steps": [{"step": s, "seconds": t, "how": h} for s, t, h in rows],
                "total_seconds": sum(t for _, t, _ in rows)}

    return {f"{ATLAS_VECTORS:,} vectors, {GRID} x {GRID} grid, on this machine ({here})":
            table(small),
            f"ImageNet: {IMAGENET_IMAGES:,} images, 1 vector each, {GRID} x {GRID} grid, "
            f"{args.gpus} GPUs": table(large),
            "assumption": assumption}


# --- the report -----------------------------------------------------------------------------

def report(results: dict) -> None:
    machine, c, r = results["machine"], results["collect"], results["render"]
    print("## Activation atlas: time of each step\n")
    print(f"{machine['date']}; CPU {machine['cpu']}, {machine['usable_cores']} usable cores "
          f"({machine['torch_threads']} torch threads), load average "
          f"{machine['load_average'][0]:.2f} at the start; device {machine['device']}"
          + (f" ({machine['gpu']})" if machine["gpu"] else "")
          + f"; torch {machine['torch']}, umap-learn {machine['umap_learn']}, lucent_core "
          f"{machine['lucent_core']} ({machine['commit']})\n")
    s = results["settings"]
    print(f"{s['model']} {s['layer']} ({s['channels']} channels, {s['map']} map at "
          f"{IMAGE_SIZE} px); images: {results['photos']}\n")
    print("| step | what | amount | seconds | rate |")
    print("|---|---|---|---|---|")
    print(f"| collect | `collect_activations`, {PER_IMAGE} per image, batch {BATCH}, "
          f"{s['workers']} workers | {c['images']} images, {c['vectors']} vectors | "
          f"{c['seconds']:.1f} | {c['images_per_s']:.1f} images/s, "
          f"{c['vectors_per_s']:.0f} vectors/s |")
    m, rd = results["model"], results["reading"]
    print(f"| collect: reading alone | decode + resize, {rd['workers']} workers, no model | "
          f"{rd['images']} images | {rd['seconds']:.1f} | {rd['images_per_s']:.1f} images/s |")
    print("| collect: model alone | forward to the layer"
          + (f" + {m['classes']} class backwards" if m["classes"] else "")
          + f", batch {BATCH}, no files | {m['images']} images | {m['seconds']:.1f} | "
          f"{m['images_per_s']:.1f} images/s |")
    p = results["material"]
    print(f"| collect (layout material) | {p['per_image']} per image | {p['images']} images, "
          f"{p['vectors']} vectors | {p['seconds']:.1f} | {p['images_per_s']:.1f} images/s |")
    for row in results["layout"]:
        if row["method"].endswith("first call"):
            why = "numba compiles" if row["method"].startswith("umap") else "libraries load"
            print(f"| layout | {row['method'].split()[0].upper()} first call ({why}) | "
                  f"{row['vectors']} vectors | {row['seconds']:.1f} | - |")
            continue
        name = "UMAP, cosine" if row["method"] == "umap" else "PCA, cosine (median of 3)"
        print(f"| layout | {name} | {row['vectors']:,} vectors | {row['seconds']:.1f} | "
              f"{row['vectors'] / row['seconds']:,.0f} vectors/s |")
    for row in results["layout"]:
        if row["method"] == ("umap" if results["use_umap"] else "pca"):
            print(f"| bin | `bin_cells` {GRID} x {GRID}, min_count {MIN_COUNT}, of the "
                  f"{row['method'].upper()} layout (median of 3) | {row['vectors']:,} vectors | "
                  f"{row['bin_seconds']:.2f} | {row['cells']} cells kept |")
    print(f"| bin | `plan_cells` from disk (PCA layout, min_count 1) | "
          f"{r['plan_vectors']:,} vectors | {r['plan_seconds']:.2f} | - |")
    print(f"| render | `render_cells`, {r['cells']} cells, {RENDER_SIZE} px, batch "
          f"{RENDER_BATCH}: {r['steps'][0]} and {r['steps'][1]} steps | {r['cells']} cells | "
          f"{r['seconds'][0]:.1f}, {r['seconds'][1]:.1f} | {r['step_s']:.3g} s per step "
          f"(batch), **{r['step_per_cell_s']:.3g} s per step per cell**, "
          f"{r['batch_fixed_s']:.2g} s fixed per batch |")
    print(f"| page | `assemble` | {r['cells']} cells | {r['page_seconds']:.2f} | "
          f"{r['page_per_cell_s']:.2g} s per cell |")
    print()
    print("### Estimates (extrapolated from the measurements above, not measured)\n")
    for scenario, block in results["estimates"].items():
        if scenario == "assumption":
            continue
        print(f"**{scenario}: {_duration(block['total_seconds'])}**\n")
        print("| step | time | how |")
        print("|---|---|---|")
        for row in block["steps"]:
            print(f"| {row['step']} | {_duration(row['seconds'])} | {row['how']} |")
        print()
    print(f"Assumption for the GPU figures: {results['estimates']['assumption']}.")
    if results["material"]["interpolated"]:
        print(f"Layout vectors: {results['material']['vectors']:,} collected, "
              f"{results['material']['interpolated']:,} interpolated within an image.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="vgg16_hed", choices=sorted(DEFAULT_LAYERS))
    parser.add_argument("--random-weights", action="store_true",
                        help="random weights (inceptionv1 has no offline weights here)")
    parser.add_argument("--layer", default=None,
                        help="default: block4_conv3 (vgg16_hed), mixed4c (inceptionv1)")
    parser.add_argument("--quick", action="store_true",
                        help="48 images, layout of 2000 vectors, 2 and 4 render steps")
    parser.add_argument("--images", type=int, default=None, help="photos (default 200)")
    parser.add_argument("--layout-sizes", default=None,
                        help="comma-separated vector counts (default 10000,100000)")
    parser.add_argument("--render-steps", type=int, default=None,
                        help="n: renders of n and 2n steps are timed (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="image-reading processes")
    parser.add_argument("--gpu-speedup", type=float, default=100.0,
                        help="CPU runs only: the assumed GPU/CPU speed ratio for the ImageNet "
                             "estimate")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of the ImageNet estimate")
    parser.add_argument("--host-workers", type=int, default=16,
                        help="image-reading processes of the ImageNet estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-json", help="also write the results here")
    args = parser.parse_args()
    images = args.images or (48 if args.quick else 200)
    sizes = [int(n) for n in (args.layout_sizes or ("2000" if args.quick else
                                                    "10000,100000")).split(",")]
    steps = args.render_steps or (2 if args.quick else 8)
    layer = args.layer or DEFAULT_LAYERS[args.model]
    device = torch.device(args.device)
    use_umap = _version("umap-learn") is not None
    machine = _machine(device)
    torch.manual_seed(args.seed)
    model = create_model(args.model, pretrained=not args.random_weights).to(device)
    channels, height, width = layer_shapes(model, [layer], IMAGE_SIZE,
                                           preprocessing_of(model))[layer]
    results = {"machine": machine, "use_umap": use_umap,
               "settings": {"model": args.model, "random_weights": args.random_weights,
                            "layer": layer, "channels": channels, "map": f"{height} x {width}",
                            "image_size": IMAGE_SIZE, "per_image": PER_IMAGE, "batch": BATCH,
                            "workers": args.workers, "grid": GRID, "min_count": MIN_COUNT,
                            "render_batch": RENDER_BATCH, "render_size": RENDER_SIZE,
                            "layout_sizes": sizes, "render_steps": steps, "quick": args.quick,
                            "gpu_speedup": args.gpu_speedup, "gpus": args.gpus,
                            "host_workers": args.host_workers}}
    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        root = Path(tmp)
        say(f"writing {images} photos ...")
        results["photos"] = write_photos(root / "photos", images, args.seed)
        write_photos(root / "warm", 8, args.seed + 1)
        say("collect: warm-up ...")
        collect_activations(model, root / "warm", root / "warm_atlas", layer, samples=64,
                            per_image=PER_IMAGE, image_size=IMAGE_SIZE, batch=8, workers=0,
                            progress=False)
        say("collect ...")
        results["collect"] = measure_collection(model, root / "photos", root / "atlas", layer,
                                                PER_IMAGE, args.workers)
        say("collect: reading alone ...")
        results["reading"] = measure_reading(root / "photos", args.workers)
        say("collect: model alone ...")
        results["model"] = measure_model(model, layer, device, 2 if args.quick else 4)
        per_image = min(height * width, math.ceil(max(sizes) / images))
        say(f"collect: layout material, {per_image} per image ...")
        material = measure_collection(model, root / "photos", root / "material", layer,
                                      per_image, args.workers)
        pool, interpolated = vector_pool(root / "material", max(sizes), args.seed)
        results["material"] = {**material, "per_image": per_image, "interpolated": interpolated}
        results["layout"] = measure_layouts(pool, sizes, use_umap, args.seed)
        del pool
        results["render"] = measure_render(model, root / "atlas", layer, steps)
    results["estimates"] = estimates(results, args)
    report(results)
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
