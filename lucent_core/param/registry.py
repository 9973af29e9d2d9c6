"""Parameterisations by name: what the command line's ``--param``, atlas settings and records
use. A new parameterisation is one module plus one :func:`register_param` line here.

Every registered factory is called as ``factory(w, h, batch=..., decorrelate=...)`` and gives
a :class:`~lucent_core.param.base.Parameterisation` whose every parameter has the batch first
(so an atlas can seed each image of a batch on its own).

Example:
    >>> param_names()
    ('fourier', 'pixel', 'cppn', 'lowres', 'laplacian_pyramid', 'maco')
    >>> make_param("pixel", 16, batch=2)().shape
    torch.Size([2, 3, 16, 16])
"""

from __future__ import annotations

from typing import Callable

from lucent_core.validate import choice
from lucent_core.param.base import Parameterisation
from lucent_core.param.cppn import cppn
from lucent_core.param.images import image
from lucent_core.param.maco import maco
from lucent_core.param.multiscale import laplacian_pyramid_image, lowres_image

__all__ = ["DEFAULT_PARAM", "check_param", "make_param", "param_names", "register_param"]

#: What ``render_vis``, ``lucent-core render`` and atlases use unless told otherwise: the
#: parameterisation that drove the quality benchmark's units hardest per step
#: (``benchmarks/quality.py``; the README's "Defaults" section has the figures).
DEFAULT_PARAM = "laplacian_pyramid"

ParamFactory = Callable[..., Parameterisation]
_PARAMS: dict[str, ParamFactory] = {}


def register_param(name: str, factory: ParamFactory) -> None:
    """Make ``factory(w, h, batch=..., decorrelate=...)`` available as ``name``.

    Example:
        >>> register_param("fourier_steep", lambda w, h=None, batch=1, decorrelate=True:
        ...                image(w, h, batch=batch, decorrelate=decorrelate, decay_power=1.5))
        >>> make_param("fourier_steep", 8).describe()["decay_power"]
        1.5
    """
    if name in _PARAMS:
        raise ValueError(f"name {name!r} is already registered; give the new one another name")
    _PARAMS[name] = factory


def param_names() -> tuple[str, ...]:
    """The registered names, in the order they were registered."""
    return tuple(_PARAMS)


#: Registered parameterisations that draw plain RGB: no colour decorrelation to turn off.
PLAIN_RGB = frozenset({"cppn"})


def check_param(name: str, decorrelate: bool = True) -> str:
    """``name`` if it is registered and ``decorrelate=False`` means something for it.

    Example:
        >>> check_param("laplacian_pyramid", decorrelate=False)
        'laplacian_pyramid'
        >>> check_param("cppn", decorrelate=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: decorrelate=False applies to the parameterisations with a colour \
decorrelation (fourier, pixel, ...), not to a cppn (plain RGB)
    """
    name = choice("param", name, _PARAMS)
    if not decorrelate and name in PLAIN_RGB:
        others = ", ".join(n for n in _PARAMS if n not in PLAIN_RGB)
        raise ValueError(f"decorrelate=False applies to the parameterisations with a colour "
                         f"decorrelation ({others}), not to a {name} (plain RGB)")
    return name


def make_param(name: str, w: int, h: int | None = None, batch: int = 1,
               decorrelate: bool = True) -> Parameterisation:
    """The parameterisation registered as ``name``, ``w`` x ``h`` pixels (``h`` default ``w``).

    ``decorrelate=False`` turns off the colour decorrelation of those that have one and is
    refused for those that draw plain RGB (:data:`PLAIN_RGB`, the CPPN).
    """
    factory = _PARAMS[check_param(name, decorrelate)]
    return factory(w, h, batch=batch, decorrelate=decorrelate)


register_param("fourier", lambda w, h=None, batch=1, decorrelate=True:
               image(w, h, batch=batch, decorrelate=decorrelate))
register_param("pixel", lambda w, h=None, batch=1, decorrelate=True:
               image(w, h, batch=batch, fft=False, decorrelate=decorrelate))
register_param("cppn", lambda w, h=None, batch=1, decorrelate=True: cppn(w, h, batch=batch))
register_param("lowres", lambda w, h=None, batch=1, decorrelate=True:
               lowres_image(w, h, batch=batch, decorrelate=decorrelate))
register_param("laplacian_pyramid", lambda w, h=None, batch=1, decorrelate=True:
               laplacian_pyramid_image(w, h, batch=batch, decorrelate=decorrelate))
register_param("maco", lambda w, h=None, batch=1, decorrelate=True:
               maco(w, h, batch=batch, decorrelate=decorrelate))
