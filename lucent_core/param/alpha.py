"""Transparency: RGBA images, compositing over random backgrounds, and alpha objectives.

The recipe ("Differentiable Image Parameterizations", Distill 2018, section on transparency;
Lucid's transparency notebook):

1. parameterise an RGBA image: colour as in :func:`~lucent_core.param.image` (Fourier basis,
   decorrelated colour) plus a fourth channel mapped to opacity by a sigmoid
   (:func:`image_rgba`);
2. at every step composite it over a *fresh random background*,
   ``rgb * alpha + background * (1 - alpha)``, before the usual robustness transforms
   (:class:`CompositeBackground`, first in the list; :func:`alpha_transforms` builds the whole
   list). Where the image is transparent the model sees noise that changes every step, so only
   opaque pixels can drive the objective consistently. The recipe's background is a random
   Fourier image with a steeper spectrum than the image (``sd=0.2``, ``1 / f**1.5``, decorrelated
   colour through a sigmoid): smooth, blotchy colour noise;
3. make opacity cost something: the recipe maximises ``objective * (1 - mean(alpha))``
   (:func:`alpha_penalty`), so every opaque pixel must pay for itself. :func:`mean_alpha` is the
   building block for other mixes, e.g. ``objective - 0.5 * mean_alpha()``.

The objectives read the pseudo-layer ``"input"`` (the rendered RGBA image, before transforms).
``render_vis`` returns ``(B, H, W, 4)`` images for an RGBA parameterisation and
:func:`~lucent_core.io.save_png` writes them as RGBA PNGs.

Example:
    >>> from lucent_core import objectives, render_vis
    >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    >>> result = render_vis(net, alpha_penalty(objectives.channel("0", 1)),
    ...                     param_f=lambda: image_rgba(32), transforms=alpha_transforms(),
    ...                     thresholds=(4,), progress=False, seed=0)
    >>> result.image.shape
    (1, 32, 32, 4)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lucent_core._device import to_device
from lucent_core.validate import choice, flag, integers, real, shape
from lucent_core.hooks import INPUT_LAYER
from lucent_core.objectives import Objective, as_objective, wrap_objective
from lucent_core.param.base import Parameterisation
from lucent_core.param.color import ToRGB
from lucent_core.param.images import ImageParam, image
from lucent_core.param.spatial import fourier_scale, spectrum_to_image
from lucent_core.transforms import Compose, RandomTransform, standard_transforms

__all__ = ["BACKGROUNDS", "CompositeBackground", "RGBAImage", "alpha_penalty",
           "alpha_transforms", "composite", "image_rgba", "mean_alpha", "random_background"]

#: Valid background kinds: the recipe's random Fourier noise, one random colour per image,
#: or white (per-pixel uniform) noise.
BACKGROUNDS = ("fourier", "color", "noise")
#: The recipe's background: Fourier noise of this standard deviation and spectral decay.
BACKGROUND_SD = 0.2
BACKGROUND_DECAY_POWER = 1.5
#: How far inside (0, 1) a start alpha is kept, where the sigmoid can be inverted.
ALPHA_EPS = 1e-4


class RGBAImage(ImageParam):
    """Colour from a spatial parameterisation and :class:`ToRGB`, opacity from its own one.

    Shape: ``forward()`` returns ``(B, 4, H, W)`` in [0, 1]: RGB, then alpha (1 = opaque).
    """

    def __init__(self, spatial: Parameterisation, to_rgb: nn.Module, alpha: Parameterisation):
        super().__init__(spatial, to_rgb)
        self.alpha = alpha

    def forward(self) -> torch.Tensor:
        return torch.cat([super().forward(), torch.sigmoid(self.alpha())], dim=1)

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """Colour and alpha each at ``size``; the result keeps 4 channels."""
        alpha = torch.sigmoid(self.alpha.render_at(size, interpolation))
        return torch.cat([super().render_at(size, interpolation), alpha], dim=1)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "channels": 4}


def _one_channel(spatial: nn.Module) -> nn.Module:
    """Keep only the first channel of a 3-channel spatial parameterisation's one parameter."""
    ((name, full),) = spatial.named_parameters()
    setattr(spatial, name, nn.Parameter(full.detach()[:, :1].clone()))
    return spatial


def image_rgba(w: int, h: int | None = None, batch: int = 1, sd: float = 0.01, fft: bool = True,
               decorrelate: bool = True, mode: str = "sigmoid", decay_power: float = 1.0,
               init: torch.Tensor | None = None, init_alpha: float | None = None) -> RGBAImage:
    """Make a learnable RGBA image: :func:`~lucent_core.param.image` plus an alpha channel.

    The alpha channel has the same basis as the colour (Fourier or pixels) and goes through a
    sigmoid, so it starts close to 0.5 (half transparent) everywhere. Render it with
    :func:`alpha_transforms` (the first transform composites it over a random background) and
    an objective with an alpha cost such as :func:`alpha_penalty`.

    Args:
        w: width in pixels.
        h: height in pixels (default: ``w``).
        batch: number of images.
        sd: standard deviation of the random initialisation (colour and alpha).
        fft: parameterise by the 1/f-scaled Fourier spectrum (else by pixels).
        decorrelate: optimise colour in ImageNet-decorrelated colour space.
        mode: ``"sigmoid"`` or ``"clamp"`` (straight-through) for the colour.
        decay_power: the Fourier 1/f exponent (an error with ``fft=False``).
        init: start from these images instead of noise, values in [0, 1]: RGB, ``(3, h, w)``
            or ``(1 or batch, 3, h, w)``, as :func:`~lucent_core.param.image` takes them
            (alpha then starts at ``init_alpha``), or RGBA, ``(4, h, w)`` or ``(1 or batch,
            4, h, w)``. ``param()`` gives them back at step 0, each channel up to 1e-4 where
            a sigmoid meets 0 or 1 (an opaque alpha starts at ``1 - 1e-4``).
        init_alpha: the opacity everywhere at step 0, in [0, 1]; default 1 (opaque) with an
            RGB ``init``, and the usual noise around 0.5 without one. An RGBA ``init`` brings
            its own alpha.

    Example:
        >>> rgba = image_rgba(64, 48, batch=2)()
        >>> rgba.shape, round(rgba[:, 3].mean().item(), 2)
        (torch.Size([2, 4, 48, 64]), 0.5)
        >>> photo = torch.rand(3, 8, 8)
        >>> start = image_rgba(8, init=photo, init_alpha=0.25)()
        >>> torch.allclose(start[0, :3], photo, atol=1e-4), round(start[0, 3].mean().item(), 4)
        (True, 0.25)
    """
    init = init[None] if isinstance(init, torch.Tensor) and init.dim() == 3 else init
    rgba = isinstance(init, torch.Tensor) and init.dim() == 4 and init.shape[1] == 4
    colour = image(w, h, batch=batch, sd=sd, fft=fft, decorrelate=decorrelate, mode=mode,
                   decay_power=decay_power, init=init[:, :3] if rgba else init)
    if rgba and not 0 <= init[:, 3].min() <= init[:, 3].max() <= 1:  # False for NaN too
        raise ValueError("init values must lie in [0, 1], alpha included")
    if init_alpha is not None and (rgba or not 0 <= real("init_alpha", init_alpha) <= 1):
        raise ValueError(f"init_alpha must be in [0, 1], and is for an RGB init only (an RGBA "
                         f"init brings its own alpha), got {init_alpha!r}")
    alpha = _one_channel(image(w, h, batch=batch, sd=sd, fft=fft, decay_power=decay_power).spatial)
    if init is not None or init_alpha is not None:
        start = init[:, 3:] if rgba else torch.full(
            (1, 1, *colour.size), 1.0 if init_alpha is None else float(init_alpha))
        alpha.assign(torch.logit(start.detach().float().cpu(), eps=ALPHA_EPS))
    return RGBAImage(colour.spatial, colour.to_rgb, alpha)


def _check_rgba(rgba: torch.Tensor, name: str) -> None:
    if rgba.dim() != 4 or rgba.shape[1] != 4:
        raise ValueError(f"{name} must be (B, 4, H, W) from image_rgba, got {tuple(rgba.shape)}")


def composite(rgba: torch.Tensor, background: "torch.Tensor | float | tuple[float, ...]"
              ) -> torch.Tensor:
    """Alpha-composite RGBA images over a background: ``rgb * alpha + background * (1 - alpha)``.

    Args:
        rgba: ``(B, 4, H, W)``, straight (not premultiplied) alpha.
        background: anything that broadcasts to ``(B, 3, H, W)``: images ``(B or 1, 3, H, W)``,
            a colour ``(3,)`` or a grey level (a number).

    Returns:
        ``(B, 3, H, W)``.

    Example:
        >>> rgba = torch.tensor([1.0, 0.0, 0.0, 0.25]).view(1, 4, 1, 1)  # red, 25 % opaque
        >>> composite(rgba, (0.0, 0.0, 1.0)).flatten().tolist()           # over blue
        [0.25, 0.0, 0.75]
    """
    _check_rgba(rgba, "rgba")
    if not isinstance(background, torch.Tensor):  # host values: checked without a device read
        levels = np.asarray(background, dtype=np.float64)
        if not (np.isfinite(levels) & (levels >= 0) & (levels <= 1)).all():
            raise ValueError(f"background must lie in [0, 1], got {background!r}")
    background = torch.as_tensor(background, dtype=rgba.dtype, device=rgba.device)
    given = shape("background", background, (), (3,), ("B", 3, "H", "W"))
    if background.dim() == 1:  # a colour
        background = background.view(1, -1, 1, 1)
    if background.dim() and any(background.shape[d] not in (1, rgba.shape[d]) for d in (0, 2, 3)):
        raise ValueError(f"background must broadcast to rgba {tuple(rgba.shape)}, got {given}")
    rgb, alpha = rgba[:, :3], rgba[:, 3:]
    return rgb * alpha + background * (1.0 - alpha)


def random_background(batch: int, width: int, height: int, kind: str = "fourier",
                      generator: torch.Generator | None = None, sd: float = BACKGROUND_SD,
                      decay_power: float = BACKGROUND_DECAY_POWER, decorrelate: bool = True,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Draw random backgrounds ``(batch, 3, height, width)`` in [0, 1] (on the CPU).

    Args:
        batch, width, height: how many and how large.
        kind: ``"fourier"`` (the recipe: a random Fourier image with spectrum
            ``sd / f**decay_power``, decorrelated colour through a sigmoid, like
            ``param.image`` at random), ``"color"`` (one uniform random colour per image)
            or ``"noise"`` (uniform white noise per pixel and channel).
        generator: the random source (a seeded one replays the same backgrounds).
        sd, decay_power, decorrelate: the ``"fourier"`` background's statistics.
        dtype: of the result.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> random_background(2, 12, 8, generator=g).shape
        torch.Size([2, 3, 8, 12])
    """
    kind = choice("kind", kind, BACKGROUNDS)
    batch, height, width = integers(1, batch=batch, height=height, width=width)
    sd, decay_power = real("sd", sd, minimum=0), real("decay_power", decay_power)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    if kind == "color":
        return torch.rand(batch, 3, 1, 1, generator=generator, dtype=work).expand(
            batch, 3, height, width).to(dtype)
    if kind == "noise":
        return torch.rand(batch, 3, height, width, generator=generator, dtype=work).to(dtype)
    scale = fourier_scale(height, width, decay_power)
    spectrum = torch.randn(batch, 3, *scale.shape, 2, generator=generator, dtype=work) * sd
    image = spectrum_to_image(spectrum, scale, (height, width))
    return ToRGB(decorrelate=decorrelate).to(work)(image).to(dtype)


class CompositeBackground(RandomTransform):
    """Composite RGBA images over random backgrounds drawn afresh at every call.

    Put it *first* in the render's transforms, before any padding or cropping:
    ``transforms=[CompositeBackground(), *standard_transforms().steps]``, or simply
    :func:`alpha_transforms`. Each image of the batch gets its own background. Backgrounds are
    drawn on the CPU from ``generator`` (or torch's global RNG), so a seeded render repeats
    exactly; ``sample`` returns the draw and ``apply_transform`` replays it.

    Args:
        kind: one of :data:`BACKGROUNDS` (see :func:`random_background`).
        sd, decay_power, decorrelate: statistics of the ``"fourier"`` background.

    Shape: ``(B, 4, H, W)`` in, ``(B, 3, H, W)`` out.

    Example:
        >>> t = CompositeBackground()
        >>> rgba = torch.rand(2, 4, 16, 16)
        >>> t(rgba).shape
        torch.Size([2, 3, 16, 16])
        >>> draw = t.sample(rgba)
        >>> torch.equal(t.apply_transform(rgba, draw), t.apply_transform(rgba, draw))
        True
    """

    def __init__(self, kind: str = "fourier", sd: float = BACKGROUND_SD,
                 decay_power: float = BACKGROUND_DECAY_POWER, decorrelate: bool = True):
        super().__init__()
        self.kind = choice("kind", kind, BACKGROUNDS)
        self.decorrelate = flag("decorrelate", decorrelate)
        self.sd, self.decay_power = real("sd", sd, minimum=0), real("decay_power", decay_power)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        _check_rgba(x, "the input of CompositeBackground (first of the transforms)")
        batch, _, height, width = x.shape
        background = random_background(batch, width, height, self.kind, generator, self.sd,
                                       self.decay_power, self.decorrelate,
                                       dtype=torch.float64 if x.dtype == torch.float64
                                       else torch.float32)
        return {"background": background}

    def apply_transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        bg = params["background"]
        if bg.shape[0] != x.shape[0] or bg.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"params['background'] {tuple(bg.shape)} misfits x {tuple(x.shape)}")
        return composite(x, to_device(bg, x.device, x.dtype))

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, sd={self.sd!r}, decay_power={self.decay_power!r}, "
                f"decorrelate={self.decorrelate!r}")


def alpha_transforms(kind: str = "fourier") -> Compose:
    """The recipe's transforms: :class:`CompositeBackground`, then the standard transforms.

    Example:
        >>> alpha_transforms()(torch.rand(1, 4, 64, 64)).shape[:2]
        torch.Size([1, 3])
    """
    return Compose([CompositeBackground(kind), *standard_transforms().steps])


def _alpha(acts: "dict[str, torch.Tensor]", batch: int | None) -> torch.Tensor:
    rgba = acts[INPUT_LAYER]
    _check_rgba(rgba, f"the rendered image {INPUT_LAYER!r} of alpha objectives")
    if batch is None:
        return rgba[:, 3]
    if not -rgba.shape[0] <= batch < rgba.shape[0]:
        raise IndexError(f"batch {batch} is out of range (valid: 0..{rgba.shape[0] - 1})")
    return rgba[batch, 3]


@wrap_objective
def mean_alpha(batch: int | None = None) -> Objective:
    """Mean opacity of the rendered RGBA image (of image ``batch`` only, if given), in [0, 1].

    An objective is *maximised*, so subtract it to favour transparency:
    ``channel("mixed4a", 476) - 0.5 * mean_alpha()``.

    Example:
        >>> rgba = torch.zeros(2, 4, 3, 3)
        >>> rgba[1, 3] = 1.0
        >>> mean_alpha()({"input": rgba}).item(), mean_alpha(batch=1)({"input": rgba}).item()
        (0.5, 1.0)
    """
    return Objective(lambda acts: _alpha(acts, batch).mean(), [INPUT_LAYER])


@wrap_objective
def alpha_penalty(objective: "Objective | str", batch: int | None = None) -> Objective:
    """The recipe's trade-off: ``objective * (1 - mean_alpha())``.

    Opaque pixels must raise the objective by more than they cost, so pixels that do not matter
    fade out. Meant for objectives that are positive once the render is under way (channel or
    neuron objectives of excited units); for a negative objective the product would reward
    *more* opacity. Lucid also adds the same product with the alpha of the transformed crop;
    here the alpha of the whole image is used.

    Args:
        objective: what to maximise (an :class:`Objective` or ``"layer:unit"``).
        batch: measure the opacity of this image of the batch only.

    Example:
        >>> rgba = torch.full((1, 4, 2, 2), 0.25)
        >>> obj = alpha_penalty(Objective(lambda acts: torch.tensor(8.0), [], "eight"))
        >>> obj({"input": rgba}).item()  # 8 * (1 - 0.25)
        6.0
    """
    return as_objective(objective) * (1.0 - mean_alpha(batch))
