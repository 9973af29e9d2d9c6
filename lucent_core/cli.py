"""The ``lucent-core`` command line: list models and layers, render a unit to a PNG.

Examples::

    lucent-core models
    lucent-core layers --model vgg16_hed
    lucent-core render --model vgg16_hed --layer block4_conv3 --channel 300 -o neuron.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from lucent_core import objectives, param
from lucent_core.hooks import list_layers
from lucent_core.io import save_png
from lucent_core.models import create_model, get_config, list_models
from lucent_core.render import render_vis

__all__ = ["main"]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available; use --device cpu")
    return torch.device(name)


def _load(args: argparse.Namespace) -> torch.nn.Module:
    model = create_model(args.model, pretrained=not args.random_weights, weights=args.weights)
    return model.to(_device(args.device))


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="vgg16_hed",
                        help="registry name (see `lucent-core models`) or torchvision:<name> "
                             "(default: vgg16_hed, which works offline)")
    parser.add_argument("--weights", help="a local weights file to load")
    parser.add_argument("--random-weights", action="store_true",
                        help="use randomly initialised weights (offline; for testing)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")


def _cmd_models(args: argparse.Namespace) -> int:
    for name in list_models():
        config = get_config(name)
        print(f"{name:14s} {config.description}")
    print("torchvision:<name>  any torchvision classifier, e.g. torchvision:resnet50")
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    model = _load(args)
    height, width = model.config.input_size
    infos = list_layers(model, (3, height, width))
    print(f"{'layer':40s} {'type':18s} output shape at {height}x{width}")
    main = model.config.layers
    for info in infos:
        # main layers: the config's list, else (torchvision) the modules at most two deep
        if args.all or (info.name in main if main else info.name.count(".") <= 1):
            shape = "x".join(map(str, info.shape)) if info.shape else "(not run)"
            print(f"{info.name:40s} {info.type:18s} {shape}")
    return 0


def _objective(args: argparse.Namespace) -> objectives.Objective:
    if args.neuron:
        obj = objectives.neuron(args.layer, args.channel, x=args.x, y=args.y)
    else:
        obj = objectives.channel(args.layer, args.channel)
    if args.diversity:
        if args.batch < 2:
            raise ValueError("--diversity needs --batch 2 or more")
        obj = obj - args.diversity * objectives.diversity(args.layer)
    return obj


def _cmd_render(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.size < 1 or args.batch < 1:
        raise ValueError("--steps, --size and --batch must be positive integers")
    if Path(args.output).is_dir():
        raise ValueError(f"-o {args.output} is a directory; give a file name such as "
                         f"{Path(args.output) / 'unit.png'}")
    model = _load(args)
    objective = _objective(args)
    started = time.perf_counter()
    result = render_vis(
        model, objective,
        param_f=lambda: param.image(args.size, batch=args.batch, fft=not args.pixel,
                                    decorrelate=not args.no_decorrelate),
        optimizer=lambda params: torch.optim.Adam(params, lr=args.lr),
        transforms=[] if args.no_transforms else None,
        thresholds=(args.steps,), seed=args.seed, progress=not args.quiet,
        redirected_relu=not args.no_redirect)
    elapsed = time.perf_counter() - started
    path = save_png(result.image, args.output)
    state = "interrupted at" if result.interrupted else "after"
    print(f"{objective.name}: {result.history[0]:.4g} -> {result.history[-1]:.4g} "
          f"{state} {len(result.history)} steps, {args.size}px x {args.batch}, "
          f"{elapsed:.1f}s on {next(model.parameters()).device}; saved {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lucent-core``."""
    parser = argparse.ArgumentParser(prog="lucent-core",
                                     description="Feature visualisation for PyTorch models.")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("models", help="list the registered models").set_defaults(run=_cmd_models)

    layers = commands.add_parser("layers", help="list a model's layers and output shapes")
    _add_model_arguments(layers)
    layers.add_argument("--all", action="store_true",
                        help="every module, not only the main layers")
    layers.set_defaults(run=_cmd_layers)

    render = commands.add_parser("render", help="render one unit to a PNG")
    _add_model_arguments(render)
    render.add_argument("--layer", required=True, help="layer name, e.g. block4_conv3")
    render.add_argument("--channel", "--unit", type=int, required=True, help="channel index")
    render.add_argument("--neuron", action="store_true",
                        help="optimise one position (the centre, or --x/--y) instead of the "
                             "whole channel")
    render.add_argument("--x", type=int, help="column of the activation map (with --neuron)")
    render.add_argument("--y", type=int, help="row of the activation map (with --neuron)")
    render.add_argument("-o", "--output", default="unit.png", help="PNG path (default unit.png)")
    render.add_argument("--steps", type=int, default=512, help="optimisation steps (512)")
    render.add_argument("--size", type=int, default=128, help="image size in pixels (128)")
    render.add_argument("--batch", type=int, default=1, help="images to render (1)")
    render.add_argument("--diversity", type=float, default=0.0,
                        help="weight of the diversity penalty between the batch's images")
    render.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (0.05)")
    render.add_argument("--seed", type=int, default=0, help="random seed (0)")
    render.add_argument("--pixel", action="store_true",
                        help="pixel parameterisation instead of Fourier")
    render.add_argument("--no-decorrelate", action="store_true",
                        help="optimise plain RGB instead of decorrelated colour")
    render.add_argument("--no-transforms", action="store_true",
                        help="no robustness transforms")
    render.add_argument("--no-redirect", action="store_true",
                        help="plain ReLU gradients instead of Lucid's redirected ReLU")
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    render.set_defaults(run=_cmd_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lucent-core`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "neuron", False) is False and (getattr(args, "x", None) is not None
                                                     or getattr(args, "y", None) is not None):
        print("lucent-core: error: --x/--y need --neuron", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (ValueError, IndexError, RuntimeError, FloatingPointError, OSError) as error:
        print(f"lucent-core: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
