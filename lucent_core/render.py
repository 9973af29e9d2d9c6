"""The render loop: optimise an image parameterisation so that an objective is maximised."""

from __future__ import annotations

import functools
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lucent_core._device import check_memory, release_freed_host_memory
from lucent_core import validate
from lucent_core.validate import choice, flag, instance, integer, shape
from lucent_core.hooks import INPUT_LAYER, capture, frozen, model_device, run_to_layers
from lucent_core.preprocessing import Preprocessing, preprocessing_of
from lucent_core.relu import redirecting
from lucent_core.objectives import Objective, as_objective
from lucent_core.param import DEFAULT_PARAM, make_param
from lucent_core.transforms import Compose, standard_affine

__all__ = ["RenderResult", "describe_transforms", "render_vis"]

ParamSpec = Union[nn.Module, Callable[[], nn.Module], None]
OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
TransformSpec = Union[Callable[[torch.Tensor], torch.Tensor],
                      Sequence[Callable[[torch.Tensor], torch.Tensor]], None]

DEFAULT_SIZE = 128
DEFAULT_LR = 0.05
TRAINING_COPIES = 4  # parameters, their gradients and Adam's two moments
_TRIM_EVERY = 32  # CPU steps between giving freed host memory back (see release_freed_host_memory)


@dataclass
class RenderResult:
    """What a render returns.

    Attributes:
        images: one ``(B, H, W, 3)`` (or ``(B, H, W, 4)`` for RGBA parameterisations) float32
            array in [0, 1] per entry of ``thresholds``.
        thresholds: the step after which each image was taken (after an interrupt, the last
            entry is the step reached).
        history: the objective's value after each step's forward pass (higher is better).
        objective: the objective's readable name.
        param: the optimised parameterisation (call it to get the image as a tensor).
        interrupted: True if Ctrl-C stopped the render early.
        extra: what a specialised render adds (e.g. MACO's transparency map).
        settings: how the render ran, to reproduce it: ``seed``, ``transforms`` (a one-line
            description of the transforms used), ``optimizer`` (class and learning rate),
            ``preprocess``, ``redirected_relu``, ``autocast``, ``channels_last``, ``compile``.
    """

    images: list[np.ndarray]
    thresholds: list[int]
    history: list[float]
    objective: str
    param: nn.Module
    interrupted: bool = False
    extra: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def image(self) -> np.ndarray:
        """The last images taken, ``(B, H, W, 3)`` in [0, 1]."""
        if not self.images:
            raise ValueError("the render was interrupted before its first step: no image")
        return self.images[-1]


def _check_thresholds(thresholds: "Sequence[int] | int") -> list[int]:
    """The sorted step counts of ``thresholds`` (one count, or a sequence of them)."""
    if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Iterable):
        thresholds = (thresholds,)
    steps = sorted({integer("thresholds", t, minimum=1) for t in thresholds})
    if not steps:
        raise ValueError("thresholds must hold at least one step count, e.g. (512,); got none")
    return steps


def _build_param(param_f: ParamSpec, device: torch.device) -> nn.Module:
    if param_f is None:
        return make_param(DEFAULT_PARAM, DEFAULT_SIZE).to(device)
    if isinstance(param_f, nn.Module):
        devices = {p.device for p in param_f.parameters()}
        if devices and devices != {device}:
            found = ", ".join(sorted(str(d) for d in devices))
            raise ValueError(f"param_f is on {found} but the model on {device}: move it with "
                             f".to({str(device)!r}) or pass a factory (lambda: param.image(128))")
        return param_f
    if callable(param_f):
        built = instance("param_f()", param_f(), nn.Module, "an nn.Module")
        if any(p.device != device for p in built.parameters()):  # built elsewhere: will it fit?
            _check_fits(built, device)
        return built.to(device)
    raise TypeError(f"param_f must be an nn.Module, factory or None, got {type(param_f).__name__}")


def _check_fits(param: nn.Module, device: torch.device) -> None:
    """Refuse (``MemoryError``), before it moves, a parameterisation whose training state
    (its tensors, their gradients and Adam's two moments: a lower bound) cannot fit on
    ``device``."""
    held = sum(t.numel() * t.element_size() for t in [*param.parameters(), *param.buffers()])
    check_memory(f"param_f ({type(param).__name__}, {held / 1e6:.1f} MB of tensors)",
                 held * TRAINING_COPIES, device, advice="render fewer or smaller images")


def _build_transforms(transforms: TransformSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    if transforms is None:
        return standard_affine()
    if isinstance(transforms, (list, tuple)):
        return Compose(transforms)
    if callable(transforms):
        return transforms
    raise TypeError(f"transforms must be callable, a list or None, got {type(transforms).__name__}")


def describe_transforms(transforms: TransformSpec) -> str:
    """One line saying which transforms a render with ``transforms=`` applies, with settings.

    Example:
        >>> from lucent_core.transforms import Jitter, Pad
        >>> describe_transforms([Pad(4), Jitter(2)])
        "Compose([Pad(4, mode='constant', value=0.5), Jitter(2)])"
    """
    built = _build_transforms(transforms)
    if isinstance(built, nn.Module):
        return repr(built)
    return getattr(built, "__qualname__", None) or type(built).__name__


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNGs inside the block without disturbing the caller's RNG state."""
    if seed is None:
        yield
        return
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def _snapshot(param: nn.Module, step: int, check: bool = True) -> np.ndarray:
    """The parameterisation's images after ``step`` as ``(B, H, W, C)`` in [0, 1] (NaN kept
    without ``check``)."""
    with torch.no_grad():
        images = param().detach().float()
    if check and not torch.isfinite(images).all():  # the last update can break an image the
        raise FloatingPointError(                    # objective never saw
            f"the image became NaN or infinite in the update of step {step}; lower the "
            "learning rate or use a sigmoid-mapped parameterisation")
    return images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def _make_optimizer(optimizer: "OptimizerFactory | None",
                    params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if optimizer is None:
        return torch.optim.Adam(params, DEFAULT_LR)
    if isinstance(optimizer, torch.optim.Optimizer) or not callable(optimizer):
        raise TypeError(f"optimizer must be e.g. lambda p: Adam(p), got {type(optimizer).__name__}")
    return instance("optimizer(params)", optimizer(params), torch.optim.Optimizer, "an Optimizer")


def _check_finite(values: list[torch.Tensor], first_step: int) -> None:
    stacked = torch.stack(values)
    bad = (~torch.isfinite(stacked)).nonzero()
    if len(bad):
        step = first_step + int(bad[0, 0])
        raise FloatingPointError(
            f"the objective became {stacked[bad[0, 0]].item()} at step {step}; lower the "
            "learning rate, check the model for unstable operations, or use a sigmoid-mapped "
            "parameterisation")


COMPILED_GRAPHS = 64  # models x layer sets that render_vis(compile=True) keeps compiled


@functools.lru_cache(maxsize=None)
def _compiled_run_to_layers() -> Callable:
    """:func:`run_to_layers` through ``torch.compile``, made once per process (its cache of
    compiled graphs, keyed by model and layers, is what makes later renders fast).

    Each model and set of layers is one compiled graph of this one function; dynamo's default
    limit of 8 per function would send a ninth (an atlas over many layers) back to eager
    mode, so while it runs the limit is at least :data:`COMPILED_GRAPHS` (``cache_size_limit``:
    the name before torch 2.7, an alias of ``recompile_limit`` since)."""
    import torch._dynamo
    limit = max(torch._dynamo.config.cache_size_limit, COMPILED_GRAPHS)
    return torch._dynamo.config.patch(cache_size_limit=limit)(torch.compile(run_to_layers))


def render_vis(model: nn.Module, objective: "Objective | str", param_f: ParamSpec = None,
               optimizer: OptimizerFactory | None = None, transforms: TransformSpec = None,
               thresholds: Sequence[int] = (512,), seed: int | None = None,
               progress: bool = True, preprocess: Preprocessing | None = None,
               redirected_relu: bool = True, autocast: torch.dtype | None = None,
               channels_last: bool | None = None, compile: bool = False,
               check_images: bool = True) -> RenderResult:
    """Optimise an image so that ``objective`` is as large as possible.

    Each step: ``param()`` gives images in [0, 1], ``transforms`` perturb them, ``preprocess``
    turns them into model input, the model runs up to the deepest layer the objective reads,
    and the optimiser takes a step on ``-objective``. The model is left exactly as it was
    (mode, ``requires_grad`` flags, no hooks), also when the render fails or is interrupted.

    Args:
        model: any ``nn.Module``; the render runs on its device.
        objective: an :class:`~lucent_core.objectives.Objective` or ``"layer:unit"``. The
            pseudo-layer ``"input"`` is the rendered image itself, before transforms (for
            regularisers); an objective that reads only ``"input"`` never runs the model.
        param_f: the parameterisation: an ``nn.Module`` on the model's device, a function
            returning one (built on the model's device), or None for the default, a 128 px
            Laplacian-pyramid image (``make_param(DEFAULT_PARAM, 128)``).
        optimizer: a function from parameters to a torch optimiser
            (default: Adam, lr 0.05).
        transforms: a callable on image batches, a list of them, ``[]`` for none, or None
            for :func:`~lucent_core.transforms.standard_affine` (Lucid's pad, jitter, scale
            and rotate in one resampling, drawn per image).
        thresholds: steps after which to take the images; the render runs ``max(thresholds)``
            steps.
        seed: makes the render exactly repeatable on CPU (the caller's RNG state is kept).
        progress: show a progress bar.
        preprocess: how images become model input; default ``model.preprocessing`` if the
            model has one (zoo models do), else images are passed as RGB in [0, 1].
        redirected_relu: during the render, give the model's
            :class:`~lucent_core.relu.RedirectedReLU` modules Lucid's redirected
            gradient, so units that start dead can still be reached (models from
            ``create_model`` have them in place of every ``nn.ReLU``; for your own model call
            :func:`~lucent_core.relu.use_redirected_relus` once). ``settings`` records
            whether any ReLU was redirected.
        autocast: run the model under ``torch.autocast`` in this dtype (``torch.bfloat16``
            or ``torch.float16``): faster on GPUs with tensor cores. The parameterisation,
            the optimiser and the objective stay in float32 (activations are cast back).
        channels_last: give the model its input in channels-last memory layout, which
            convolutions and max pools then keep (faster on CPUs and on tensor-core GPUs).
            Default: on when the model has a ``Conv2d``. A model that calls ``.view()`` on
            its activations may need ``channels_last=False``.
        compile: run the model's forward (up to the deepest layer needed) through
            ``torch.compile``. The first render compiles (tens of seconds), later renders of
            the same model and layers reuse it; worth it on GPUs for long renders and atlases.
        check_images: raise ``FloatingPointError`` when a taken image is not finite (an
            update after the last objective broke it). ``False`` keeps such images, NaN, for
            a caller that judges each image itself (an atlas fails those units one by one).

    Returns:
        A :class:`RenderResult` with the images at each threshold and the objective history.
        Ctrl-C stops early and returns what was rendered so far (``interrupted=True``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> result = render_vis(net, "0:1", thresholds=(8,), progress=False, seed=0)
        >>> result.image.shape
        (1, 128, 128, 3)
    """
    objective = as_objective(objective)
    steps = _check_thresholds(thresholds)
    seed = None if seed is None else validate.seed("seed", seed)
    progress = flag("progress", progress)
    redirected_relu = flag("redirected_relu", redirected_relu)
    compile, check_images = flag("compile", compile), flag("check_images", check_images)
    if channels_last is not None:
        channels_last = flag("channels_last", channels_last)
    instance("model", model, nn.Module, "a torch nn.Module")
    device, dtype = model_device(model)
    choice("autocast", autocast, (None, torch.bfloat16, torch.float16))
    preprocess = preprocessing_of(model, preprocess)
    if channels_last is None:
        channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    forward = _compiled_run_to_layers() if compile else run_to_layers
    transform = _build_transforms(transforms)
    reads_input = INPUT_LAYER in objective.layers
    model_layers = sorted(objective.layers - {INPUT_LAYER})

    bar_every = 1 if device.type == "cpu" else 50
    images: list[np.ndarray] = []
    taken: list[int] = []
    values: list[torch.Tensor] = []
    checked = 0
    interrupted = False
    with _seeded(seed, device):
        param = _build_param(param_f, device)
        params = [p for p in param.parameters() if p.requires_grad]
        if not params:
            raise ValueError("param_f has no trainable parameters (all have requires_grad=False)")
        opt = _make_optimizer(optimizer, params)
        with frozen(model), redirecting(model, redirected_relu) as redirectable, \
                capture(model, model_layers) as acts, ExitStack() as opened:
            bar = None  # opened after the first step: an error there (an unknown layer, a
            started = time.time()  # channel out of range) shows without an empty bar above it
            try:
                for step in range(1, steps[-1] + 1):
                    opt.zero_grad(set_to_none=True)
                    rendered = param()
                    if model_layers:
                        x = transform(rendered)
                        if x.shape[1] == 4:
                            raise ValueError("param_f gives RGBA: use param.alpha_transforms()")
                        x = preprocess(x.to(dtype))
                        if channels_last and x.dim() == 4:
                            x = x.contiguous(memory_format=torch.channels_last)
                        with torch.autocast(device.type, dtype=autocast or torch.bfloat16,
                                            enabled=autocast is not None):
                            forward(model, x, acts)
                        if autocast is not None:
                            for name in model_layers:
                                acts[name] = acts[name].float()
                    if reads_input:
                        acts[INPUT_LAYER] = rendered
                    value = objective(acts)
                    shape("objective(acts)", value, ())  # a scalar
                    (-value).backward()
                    opt.step()
                    values.append(value.detach())
                    if bar is None:
                        bar = opened.enter_context(tqdm(
                            total=steps[-1], desc=objective.name[:60], disable=not progress,
                            leave=True))
                        bar.start_t = started  # its clock includes the first step's time
                    bar.update(1)
                    if device.type == "cpu" and step % _TRIM_EVERY == 0:
                        release_freed_host_memory()
                    # Host-device syncs: at thresholds, and for a visible bar every 50 steps
                    # (every step on the CPU, where reading a value costs nothing)
                    if step == 1 or step in steps or (progress and step % bar_every == 0):
                        _check_finite(values[checked:], checked + 1)
                        checked = len(values)
                        bar.set_postfix(objective=f"{values[-1].item():.4g}", refresh=False)
                    if step in steps:
                        images.append(_snapshot(param, step, check_images))
                        taken.append(step)
            except RuntimeError as error:
                if channels_last and "view size is not compatible" in str(error):
                    raise RuntimeError(f"{error}\nThe model calls .view() on a channels-last "
                                       "tensor: pass channels_last=False to render_vis (or "
                                       "use .reshape() in the model)") from error
                raise
            except KeyboardInterrupt:
                interrupted = True
                if values[checked:]:
                    _check_finite(values[checked:], checked + 1)
                if values and (not taken or taken[-1] != len(values)):
                    images.append(_snapshot(param, len(values), check_images))
                    taken.append(len(values))
    history = torch.stack(values).float().cpu().tolist() if values else []
    settings = {"seed": seed, "transforms": describe_transforms(transform),
                "optimizer": _describe_optimizer(opt), "preprocess": repr(preprocess),
                "redirected_relu": redirected_relu and redirectable > 0,  # what took effect
                "autocast": None if autocast is None else str(autocast).replace("torch.", ""),
                "channels_last": channels_last, "compile": compile}
    return RenderResult(images=images, thresholds=taken, history=history,
                        objective=objective.name, param=param, interrupted=interrupted,
                        settings=settings)


def _describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """``"Adam(lr=0.05)"``: the optimiser's class and its first parameter group's rate."""
    lr = optimizer.param_groups[0].get("lr") if optimizer.param_groups else None
    lr = lr.item() if isinstance(lr, torch.Tensor) else lr
    return f"{type(optimizer).__name__}(lr={lr!r})"
