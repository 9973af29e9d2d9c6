"""The ``lucent-core`` command line: list models and layers, render a unit to a PNG.

Examples::

    lucent-core models
    lucent-core layers --model vgg16_hed
    lucent-core render --model vgg16_hed --layer block4_conv3 --channel 300 -o neuron.png
    lucent-core atlas --model vgg16_hed --layer block4_conv3 --units 0:64 --out atlas
    torchrun --nproc-per-node 4 -m lucent_core.cli atlas --model inceptionv1 --layer mixed4a \
        --out atlas
    lucent-core atlas-index atlas
    lucent-core circuit --model vgg16_hed --layer block4_conv3 --unit 300 --from block4_conv2 \
        -o circuit.png
    lucent-core explain --model vgg16_hed --image photo.jpg --layer block4_conv3 --out report
    lucent-core activation-atlas --model inceptionv1 --layer mixed4c --images photos/ --out aa
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from lucent_core import objectives, param
from lucent_core.hooks import UnknownLayerError, list_layers
from lucent_core.io import save_png
from lucent_core.validate import integer, real
from lucent_core.models import create_model, get_config, list_models
from lucent_core.atlas.plan import PRECISIONS
from lucent_core.render import render_vis
from lucent_core.units import UNIT_KINDS, Series, load_directions

__all__ = ["main"]


def _finite_option(what: str, **bounds: object) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number within ``bounds`` (see ``real``)."""
    def parse(text: str) -> float:
        try:
            return real(what, float(text), **bounds)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse


_learning_rate = _finite_option("the learning rate", positive=True)
# a negative weight would reward similar images
_penalty_weight = _finite_option("the diversity weight", minimum=0)


class _Parser(argparse.ArgumentParser):
    """A parser that takes no prefix of a flag for the flag (``--step`` is not ``--steps``)
    and names unknown flags, with close matches, before any other complaint (argparse says
    "--channel is required" for a mistyped ``--chanel``). Subcommands' parsers are ones too;
    the top one (``names_unknown_flags = False``) leaves their flags to them."""

    names_unknown_flags = True

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        if self.names_unknown_flags and args is not None:
            known = [flag for action in self._actions for flag in action.option_strings]
            unknown = [_close_flags(arg.split("=", 1)[0], known) for arg in
                       _flag_like(list(args)) if arg.split("=", 1)[0] not in known
                       and not (arg[1] != "-" and arg[:2] in known)]  # -ofile: -o file
            if unknown:
                self.error(f"unrecognized arguments: {', '.join(unknown)}")
        return super().parse_known_args(args, namespace)


def _flag_like(args: list[str]) -> list[str]:
    """The arguments that look like flags (up to ``--``); negative numbers are values."""
    args = args[:args.index("--")] if "--" in args else args
    return [arg for arg in args if len(arg) > 1 and arg[0] == "-"
            and not (arg[1].isdigit() or arg[1] == ".")]


def _close_flags(flag: str, known: list[str]) -> str:
    """``flag``, and the known flags it may have meant: ``--chanel (did you mean --channel?)``."""
    close = difflib.get_close_matches(flag, known, n=2, cutoff=0.8)
    return f"{flag} (did you mean {' or '.join(close)}?)" if close else flag


def _device(name: str) -> torch.device:
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # under torchrun, each rank takes the GPU of its local rank
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    try:
        torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: choose auto, cpu, cuda, cuda:N or another torch "
                         "device (mps, xpu, ...)") from None
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available; use --device cpu")
    if name == "cuda":  # no index given: under torchrun, the GPU of the local rank too
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def _load(args: argparse.Namespace) -> torch.nn.Module:
    if args.random_weights and args.weights:
        raise ValueError("--random-weights and --weights exclude each other")
    if args.weights_seed is not None and not args.random_weights:
        raise ValueError("--weights-seed chooses random weights: give it with --random-weights")
    # seeded, so every process of a sharded atlas builds the same model (random weights, and
    # whatever a package.module:function draws when it builds)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(getattr(args, "seed", 0))
        model = create_model(args.model, pretrained=not args.random_weights,
                             weights=args.weights,
                             seed=_weights_seed(args) if args.random_weights else None)
    return model.to(_device(args.device))


def _weights_seed(args: argparse.Namespace) -> int:
    """``--weights-seed``, else ``--seed`` (the seed random weights were always drawn from)."""
    if args.weights_seed is not None:
        return args.weights_seed
    return getattr(args, "seed", 0)


def _weights_description(args: argparse.Namespace) -> str:
    return "random" if args.random_weights else (args.weights or "pretrained")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="vgg16_hed",
                        help="registry name (see `lucent-core models`), torchvision:<name>, or "
                             "your own package.module:function (default: vgg16_hed, which "
                             "works offline)")
    parser.add_argument("--weights", help="a local weights file to load")
    parser.add_argument("--random-weights", action="store_true",
                        help="use randomly initialised weights (offline; for testing)")
    parser.add_argument("--weights-seed", type=int,
                        help="the seed of --random-weights (default: --seed, else 0)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")


def _add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="run the model under torch.autocast in this precision (bfloat16 is "
                             "faster on recent GPUs; default float32)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model's forward (pays off on GPUs for long "
                             "renders and atlases; the first step compiles)")


def _autocast(args: argparse.Namespace) -> torch.dtype | None:
    return None if args.precision == "float32" else getattr(torch, args.precision)


def _cmd_models(args: argparse.Namespace) -> int:
    for name in list_models():
        config = get_config(name)
        print(f"{name:14s} {config.description}")
    print("torchvision:<name>  any torchvision classifier, e.g. torchvision:resnet50")
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    if not args.weights:  # shapes do not depend on the weights: no download, works offline
        args.random_weights = True
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


def _check_png_output(output: str) -> None:
    if Path(output).is_dir():
        raise ValueError(f"-o {output} is a folder; give a file, e.g. {output}/unit.png")
    if Path(output).suffix.lower() != ".png":
        raise ValueError(f"-o {output} must end in .png, e.g. {Path(output).stem}.png")


def _cmd_render(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.size < 1 or args.batch < 1:
        raise ValueError("--steps, --size and --batch must be positive integers")
    _check_png_output(args.output)
    model = _load(args)
    objective = _objective(args)
    started = time.perf_counter()
    result = render_vis(
        model, objective,
        param_f=lambda: param.make_param(args.param, args.size, batch=args.batch,
                                         decorrelate=not args.no_decorrelate),
        optimizer=lambda params: torch.optim.Adam(params, lr=args.lr),
        transforms=[] if args.no_transforms else None,
        thresholds=(args.steps,), seed=args.seed, progress=not args.quiet,
        redirected_relu=not args.no_redirect, autocast=_autocast(args), compile=args.compile)
    elapsed = time.perf_counter() - started
    if result.interrupted and not result.images:
        raise KeyboardInterrupt  # before the first step: nothing to save
    path = save_png(result.image, args.output)
    state = "interrupted at" if result.interrupted else "after"
    print(f"{objective.name}: {result.history[0]:.4g} -> {result.history[-1]:.4g} "
          f"{state} {len(result.history)} steps, {args.size}px x {args.batch}, "
          f"{elapsed:.1f}s on {next(model.parameters()).device}; saved {path}")
    if args.batch > 1:
        from lucent_core.recipes.quality import diversity_score
        images = torch.from_numpy(result.image).permute(0, 3, 1, 2)
        score = diversity_score(model, images, args.layer)
        print(f"diversity score at {args.layer}: {score:.3f} (mean Gram cosine between the "
              "images; lower is more diverse)")
    return 130 if result.interrupted else 0


def _cmd_circuit(args: argparse.Namespace) -> int:
    from lucent_core.recipes.circuits import circuit_figure, save_circuit_figure
    if args.steps < 1 or args.size < 1 or args.top < 1:
        raise ValueError("--steps, --size and --top must be positive integers")
    _check_png_output(args.output)
    model = _load(args)
    started = time.perf_counter()
    figure = circuit_figure(model, args.layer, args.unit, args.source_layer, top=args.top,
                            atlas=args.atlas, steps=args.steps, size=args.size, seed=args.seed,
                            progress=not args.quiet)
    path = save_circuit_figure(figure, args.output)
    sources = [panel["extra"]["source"] for panel in figure.panels]
    print(f"{args.layer} {args.unit} <- {args.source_layer}: "
          f"{len(figure.connections.positive)} excitatory and "
          f"{len(figure.connections.negative)} inhibitory inputs; {sources.count('render')} "
          f"pictures rendered, {sources.count('atlas')} from the atlas, "
          f"{time.perf_counter() - started:.1f}s on {next(model.parameters()).device}; saved "
          f"{path}, {path.with_suffix('.svg')}, {path.with_suffix('.json')}")
    return 0


def _add_circuit_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "circuit", help="draw a unit with its strongest inputs and their weights (PNG + SVG)",
        description="Draw LAYER's UNIT with its --top strongest excitatory inputs from the "
                    "layer --from above it and its strongest inhibitory ones below, each with "
                    "its expanded-weight picture; pictures come from --atlas where it has them "
                    "and are rendered (one batch per layer) otherwise. Writes -o (a PNG), the "
                    "same name .svg and a .json side-car.")
    _add_model_arguments(parser)
    parser.add_argument("--layer", required=True, help="the unit's layer, e.g. block4_conv3")
    parser.add_argument("--unit", type=int, required=True, help="the unit's channel")
    parser.add_argument("--from", dest="source_layer", required=True, metavar="SOURCE_LAYER",
                        help="an earlier layer whose units feed it, e.g. block4_conv2")
    parser.add_argument("--top", type=int, default=8, help="inputs of each sign (8)")
    parser.add_argument("--atlas", metavar="DIR",
                        help="a unit atlas (lucent-core atlas --out DIR) to take pictures from")
    parser.add_argument("--steps", type=int, default=512, help="optimisation steps (512)")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels (128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("-o", "--output", default="circuit.png",
                        help="PNG path; the .svg and .json go beside it (default circuit.png)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_cmd_circuit)


def _cmd_explain(args: argparse.Namespace) -> int:
    from lucent_core.explain import explain_photo
    model = _load(args)
    started = time.perf_counter()
    page = explain_photo(model, args.image, args.layer, args.out, target=args.target,
                         steps=args.steps, size=args.size, image_size=args.image_size,
                         k=args.k, groups=args.groups, grid=args.grid, atlas=args.atlas,
                         seed=args.seed, progress=not args.quiet,
                         command=shlex.join(["lucent-core", *sys.argv[1:]]))
    print(f"explained {args.image} at {args.layer} in {time.perf_counter() - started:.1f}s: "
          f"open {page}")
    return 0


def _add_explain_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "explain", help="what a layer sees in one photo: a static HTML report",
        description="Attribution (activation x gradient and integrated gradients) of --target "
                    "to --layer's positions and units, the semantic dictionary, the activation "
                    "grid and the neuron groups of one photo, written as --out/index.html "
                    "(static: open it from disk).")
    _add_model_arguments(parser)
    parser.add_argument("--image", required=True, help="the photo (any format PIL reads)")
    parser.add_argument("--layer", required=True, help="the layer explained, e.g. block4_conv3")
    parser.add_argument("--out", required=True, metavar="DIR", help="the report's directory")
    parser.add_argument("--target", help="labels:N (a class logit) or LAYER:UNIT (default: the "
                                         "top class, else the deepest layer's strongest unit)")
    parser.add_argument("--steps", type=int, default=256, help="optimisation steps (256)")
    parser.add_argument("--size", type=int, default=96, help="unit picture size in pixels (96)")
    parser.add_argument("--image-size", type=int, default=224,
                        help="the photo's size: its centre square resized (224)")
    parser.add_argument("--k", type=int, default=4, help="units per position in the dictionary")
    parser.add_argument("--groups", type=int, default=4, help="neuron groups (4)")
    parser.add_argument("--grid", type=int, default=8, help="activation-grid cells per side (8)")
    parser.add_argument("--atlas", metavar="DIR",
                        help="a unit atlas (lucent-core atlas --out DIR) to take pictures from")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=_cmd_explain)


def _cmd_activation_atlas(args: argparse.Namespace) -> int:
    from lucent_core.recipes.activation_atlas import activation_atlas
    model = _load(args)
    say = (lambda line: None) if args.quiet else print
    with _sigterm_as_ctrl_c():
        page = activation_atlas(
            model, args.images, args.out, args.layer, grid=args.grid, min_count=args.min_count,
            samples=args.samples, per_image=args.per_image, image_size=args.image_size,
            layout=args.layout, steps=args.steps, size=args.size, batch=args.batch,
            cossim_pow=args.cossim_pow, whiten=args.whiten, class_index=args.class_index,
            seed=args.seed, shard=args.shard, workers=args.workers, progress=not args.quiet,
            model_name=args.model, say=say)
    print(f"activation atlas: open {page}" if page else
          "not complete yet: run the same command again (or wait for the other shards)")
    return 0


def _add_activation_atlas_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "activation-atlas", help="what a layer represents across a folder of images",
        description="An activation atlas (Carter et al. 2019): collect --layer's activation "
                    "vectors at --per-image random positions of every image under --images, "
                    "lay them out in 2-D, average them in a --grid x --grid grid and render "
                    "each cell; writes --out/activation_atlas.png and --out/index.html. Every "
                    "phase resumes (run the same command again after Ctrl-C or a crash).")
    _add_model_arguments(parser)
    parser.add_argument("--layer", required=True, help="a layer with positions, e.g. mixed4c")
    parser.add_argument("--images", required=True, metavar="DIR", help="a folder of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="the atlas directory")
    parser.add_argument("--grid", type=int, default=20, help="cells per side (20)")
    parser.add_argument("--min-count", type=int, default=3,
                        help="vectors a cell needs to be drawn (3)")
    parser.add_argument("--samples", type=int, default=100_000,
                        help="the most activation vectors kept (100000)")
    parser.add_argument("--per-image", type=int, default=8,
                        help="random positions kept per image (8)")
    parser.add_argument("--image-size", type=int, default=224,
                        help="images are resized and centre-cropped to this square (224)")
    parser.add_argument("--layout", choices=("umap", "tsne", "pca"), default="umap",
                        help="the 2-D layout (umap needs `pip install 'lucent_core[atlas]'`)")
    parser.add_argument("--steps", type=int, default=512, help="optimisation steps (512)")
    parser.add_argument("--size", type=int, default=80, help="cell picture size in pixels (80)")
    parser.add_argument("--batch", type=int, default=16, help="cells rendered together (16)")
    parser.add_argument("--cossim-pow", type=float, default=1.0,
                        help="cosine-similarity exponent of the cell directions (1)")
    parser.add_argument("--whiten", action="store_true",
                        help="render whitened directions (by the activations' covariance)")
    parser.add_argument("--class", dest="class_index", type=int, metavar="N",
                        help="the class atlas of class N: only vectors that support it most")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="render this share of the cells (the first also collects)")
    parser.add_argument("--workers", type=int, default=2, help="image-reading processes (2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or reports")
    parser.set_defaults(run=_cmd_activation_atlas)


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """A scheduler's SIGTERM (Slurm preemption, torchrun stopping) takes the Ctrl-C path."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _series(args: argparse.Namespace, layers: Sequence[str]) -> list:
    """The series of the unit kind a flag asks for (``--neuron``, ``--directions FILE``; none:
    channels), one per layer."""
    chosen = [kind for kind in UNIT_KINDS.values()
              if kind.cli_flag and getattr(args, _dest(kind.cli_flag), None)]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(k.cli_flag for k in chosen)} exclude each other")
    if not chosen:
        return [Series(layer) for layer in layers]
    kind = chosen[0]
    if not kind.needs_directions:
        return [Series(layer, kind.name) for layer in layers]
    if len(layers) != 1:
        raise ValueError(f"{kind.cli_flag} belong to one layer: give exactly one --layer")
    source = getattr(args, _dest(kind.cli_flag))
    return [Series(layers[0], kind.name, load_directions(source), source=source)]


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _add_unit_kind_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per unit kind that has one (``--neuron``; ``--directions FILE``)."""
    for kind in UNIT_KINDS.values():
        if kind.cli_flag and kind.needs_directions:
            parser.add_argument(kind.cli_flag, metavar="FILE", help=kind.cli_help)
        elif kind.cli_flag:
            parser.add_argument(kind.cli_flag, action="store_true", help=kind.cli_help)


def _cmd_atlas(args: argparse.Namespace) -> int:
    from lucent_core import atlas
    series = _series(args, args.layer)
    if args.threads is not None:  # CPU pictures depend on it: records state it
        torch.set_num_threads(integer("--threads", args.threads, minimum=1))
    with _sigterm_as_ctrl_c():
        model = _load(args)
        summary = atlas.render_atlas(
            model, args.out, series, units=args.units, batch=args.batch, shard=args.shard,
            progress=not args.quiet, index=not args.no_index, model_name=args.model,
            weights=_weights_description(args), steps=args.steps, size=args.size,
            param=args.param, decorrelate=not args.no_decorrelate, transforms=args.transforms,
            lr=args.lr, seed=args.seed, redirected_relu=not args.no_redirect,
            precision=args.precision, compile=args.compile)
    print(summary)
    return 130 if summary.interrupted else 1 if summary.failed else 0


def _cmd_atlas_index(args: argparse.Namespace) -> int:
    from lucent_core import atlas
    page = atlas.build_index(args.atlas)
    manifest = atlas.load_manifest(args.atlas)
    for series in manifest["series"]:
        print(f"{series['name']:40s} {series['count']:6d} of {series['total']} units")
    print(f"gallery: {page}")
    return 0


def _cmd_examples(args: argparse.Namespace) -> int:
    from lucent_core import atlas
    from lucent_core.recipes.examples import find_examples
    (series,) = _series(args, [args.layer])
    model = _load(args)
    with _sigterm_as_ctrl_c():
        summary = find_examples(model, args.images, args.out, series, top=args.top,
                                units=args.units, batch_size=args.batch_size,
                                workers=args.workers, size=args.size, model_name=args.model,
                                progress=not args.quiet)
    print(summary)
    if summary.interrupted:
        return 130
    if not args.no_index and (Path(args.out) / "atlas.json").is_file():
        print(f"gallery: {atlas.build_index(args.out)}")
    return 0


def _add_examples_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "examples", help="find the dataset images that activate each unit most (top-k + crops)",
        description="Stream a folder of images (recursive; JPEG, PNG, WebP) through the model "
                    "and keep, for every unit, the top-k images by peak activation with a crop "
                    "of the receptive field around the peak. Results go into OUT (an atlas "
                    "directory: its gallery then shows them); re-running resumes.")
    _add_model_arguments(parser)
    parser.add_argument("--layer", required=True, help="layer name, e.g. block4_conv3")
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--out", required=True, help="the atlas directory to add examples to")
    parser.add_argument("--top", type=int, default=9, help="images kept per unit (9)")
    parser.add_argument("--units", help="which units: 0:64, 3,7,9, -1, --units=-8: ... "
                                        "(default: all)")
    _add_unit_kind_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward (32)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="image-decoding worker processes (default: up to 4)")
    parser.add_argument("--size", type=int,
                        help="resize + centre-crop images to this size (default: the model's "
                             "input size, else 224)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the seed of --random-weights (use the atlas's --seed)")
    parser.add_argument("--no-index", action="store_true",
                        help="do not rebuild the atlas's manifest and gallery afterwards")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_cmd_examples)


def _add_atlas_parser(commands: argparse._SubParsersAction) -> None:
    from lucent_core.atlas.plan import TRANSFORMS
    parser = commands.add_parser(
        "atlas", help="render every unit of layers into a resumable atlas with an HTML gallery",
        description="Render many units, a batch at a time, into OUT (one PNG + JSON record per "
                    "unit). Re-running the same command resumes. Split the work with --shard "
                    "i/n (job arrays) or torchrun --nproc-per-node N -m lucent_core.cli atlas.")
    _add_model_arguments(parser)
    parser.add_argument("--layer", action="append", required=True,
                        help="layer to render (repeat for several layers)")
    parser.add_argument("--units", help="which units: 0:64, 3,7,9, 0:512:2, -1, --units=-8: "
                                        "... (default: all)")
    _add_unit_kind_arguments(parser)
    parser.add_argument("--out", required=True, help="the atlas directory")
    parser.add_argument("--steps", type=int, default=512, help="optimisation steps (512)")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels (128)")
    parser.add_argument("--batch", type=int, default=64, help="units optimised together (64)")
    parser.add_argument("--param", choices=param.param_names(), default=param.DEFAULT_PARAM,
                        help=f"image parameterisation ({param.DEFAULT_PARAM})")
    parser.add_argument("--no-decorrelate", action="store_true",
                        help="plain RGB instead of decorrelated colour (all but cppn)")
    parser.add_argument("--transforms", choices=TRANSFORMS, default="standard",
                        help="robustness transforms, drawn per unit (standard)")
    parser.add_argument("--lr", type=_learning_rate, default=0.05, help="Adam learning rate (0.05)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed; each unit's seed is derived from it (0)")
    parser.add_argument("--no-redirect", action="store_true",
                        help="plain ReLU gradients instead of Lucid's redirected ReLU")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="render only shard I of N (e.g. $SLURM_ARRAY_TASK_ID/8)")
    parser.add_argument("--no-index", action="store_true",
                        help="do not build the manifest and gallery at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads (torch.set_num_threads); CPU pictures depend on it, "
                             "so records state it and reproduce commands set it")
    _add_speed_arguments(parser)
    parser.set_defaults(run=_cmd_atlas)

    index = commands.add_parser("atlas-index",
                                help="merge an atlas's records into manifest.json + gallery")
    index.add_argument("atlas", help="the atlas directory")
    index.set_defaults(run=_cmd_atlas_index)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lucent-core``."""
    parser = _Parser(prog="lucent-core", description="Feature visualisation for PyTorch models.")
    parser.names_unknown_flags = False  # each subcommand names its own
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
    render.add_argument("--channel", "--unit", type=int, required=True,
                        help="channel index (negative: from the last, as in Python)")
    render.add_argument("--neuron", action="store_true",
                        help="optimise one position (the centre, or --x/--y) instead of the "
                             "whole channel")
    render.add_argument("--x", type=int, help="column of the activation map (with --neuron)")
    render.add_argument("--y", type=int, help="row of the activation map (with --neuron)")
    render.add_argument("-o", "--output", default="unit.png", help="PNG path (default unit.png)")
    render.add_argument("--steps", type=int, default=512, help="optimisation steps (512)")
    render.add_argument("--size", type=int, default=128, help="image size in pixels (128)")
    render.add_argument("--batch", type=int, default=1, help="images to render (1)")
    render.add_argument("--diversity", type=_penalty_weight, default=0.0,
                        help="weight of the diversity penalty between the batch's images")
    render.add_argument("--lr", type=_learning_rate, default=0.05, help="Adam learning rate (0.05)")
    render.add_argument("--seed", type=int, default=0, help="random seed (0)")
    render.add_argument("--param", choices=param.param_names(), default=param.DEFAULT_PARAM,
                        help=f"image parameterisation ({param.DEFAULT_PARAM})")
    render.add_argument("--no-decorrelate", action="store_true",
                        help="optimise plain RGB instead of decorrelated colour")
    render.add_argument("--no-transforms", action="store_true",
                        help="no robustness transforms")
    render.add_argument("--no-redirect", action="store_true",
                        help="plain ReLU gradients instead of Lucid's redirected ReLU")
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_speed_arguments(render)
    render.set_defaults(run=_cmd_render)
    _add_atlas_parser(commands)
    _add_examples_parser(commands)
    _add_circuit_parser(commands)
    _add_explain_parser(commands)
    _add_activation_atlas_parser(commands)
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
    except BrokenPipeError:  # the reader went away (`lucent-core models | head -1`): fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UnknownLayerError as error:
        model = getattr(args, "model", None)
        message = error.describe(f"List them with: lucent-core layers --model {model} --all")
        print(f"lucent-core: error: {message if model else error}", file=sys.stderr)
        return 2
    except (ValueError, IndexError, RuntimeError, FloatingPointError, OSError) as error:
        print(f"lucent-core: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lucent-core: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
