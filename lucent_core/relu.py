"""ReLU with Lucid's "redirected" gradient, switchable per model.

A unit whose input starts negative everywhere gets no gradient through a plain ReLU and can
never be reached by gradient ascent. Lucid's redirected ReLU fixes that: for an image whose
ordinary ReLU gradient is zero everywhere, the gradient is passed through at negative inputs
wherever it would push the input *up* (towards activating), and blocked where it would push it
further down. Images that already get an ordinary gradient keep it unchanged. The forward pass
is an ordinary ReLU.

Two differences from Lucid's: Lucid redirects only during the first 16 optimisation steps,
this one at every step (an image whose gradient dies later is revived too; while an image has
an ordinary gradient the two agree); and an input of exactly 0 counts as inactive here (as
in PyTorch's ReLU), where Lucid passes the gradient at 0. Only ``nn.ReLU`` modules are
replaced (Lucid also redirects ReLU6).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from lucent_core.validate import flag
from lucent_core.hooks import is_compiling

__all__ = ["RedirectedReLU", "redirected_relu", "redirecting", "set_redirected_relu",
           "use_redirected_relus"]




class _RedirectedReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(x)
        # The output, not the input, is saved: the next layer keeps it alive anyway.
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        relu_grad = torch.ops.aten.threshold_backward(grad, out, 0)
        has_relu_grad = relu_grad.flatten(1).any(1)
        # On the CPU, reading the flags costs nothing and usually every image has an ordinary
        # gradient; on a GPU that read would stall the stream, so the general rule runs there,
        # and under torch.compile too (a value-dependent branch cannot be traced).
        if grad.device.type == "cpu" and not is_compiling() and bool(has_relu_grad.all()):
            return relu_grad
        # ``grad`` is the gradient of the quantity being minimised: grad > 0 at a negative
        # input would push it lower still, so that part stays blocked. Images that have an
        # ordinary gradient keep it: everything at non-positive inputs is blocked for them.
        has_relu_grad = has_relu_grad.view(-1, *([1] * (grad.dim() - 1)))
        return grad.masked_fill((out <= 0) & ((grad > 0) | has_relu_grad), 0)


def redirected_relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU forward; Lucid's redirected gradient backward (see the module docstring).

    Example:
        >>> x = torch.tensor([[-1.0, -2.0]], requires_grad=True)
        >>> loss = -redirected_relu(x).sum()  # minimising this maximises the activations
        >>> loss.backward()                   # a plain ReLU would give zero gradient
        >>> x.grad                            # descent on it raises x
        tensor([[-1., -1.]])
    """
    return _RedirectedReLUFunction.apply(x)


class RedirectedReLU(nn.Module):
    """A ReLU whose backward can be switched to Lucid's redirected gradient.

    Args:
        redirect: use the redirected gradient (forward is a plain ReLU either way).
        inplace: like ``nn.ReLU(inplace=True)``, overwrite the input, except while the
            redirected gradient is in use (a custom gradient needs its own output tensor).

    Example:
        >>> RedirectedReLU()(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """

    def __init__(self, redirect: bool = False, inplace: bool = False):
        super().__init__()
        self.redirect = redirect
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.redirect and torch.is_grad_enabled() and x.requires_grad and x.dim() >= 2:
            return redirected_relu(x)
        return torch.relu_(x) if self.inplace else torch.relu(x)

    def extra_repr(self) -> str:
        return f"redirect={self.redirect}" + (", inplace=True" if self.inplace else "")


def use_redirected_relus(model: nn.Module) -> int:
    """Replace every ``nn.ReLU`` module of ``model`` by a :class:`RedirectedReLU`, in place.

    The forward pass is unchanged (an in-place ReLU stays in place, except while a render
    uses the redirected gradient); renders can then switch on the redirected gradient. ReLUs
    called as functions (``F.relu``) inside a ``forward`` cannot be reached.
    :func:`~lucent_core.models.create_model` does this for every model it builds. Returns how
    many modules were replaced.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True))
        >>> use_redirected_relus(net), net[1]
        (1, RedirectedReLU(redirect=False, inplace=True))
    """
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.ReLU:
                setattr(parent, name, RedirectedReLU(inplace=child.inplace))
                count += 1
    return count


def _relus(model: nn.Module) -> Iterator[RedirectedReLU]:
    return (m for m in model.modules() if isinstance(m, RedirectedReLU))


def set_redirected_relu(model: nn.Module, redirect: bool) -> int:
    """Switch every :class:`RedirectedReLU` in ``model``; returns how many were switched.

    Example:
        >>> set_redirected_relu(nn.Sequential(RedirectedReLU(), RedirectedReLU()), True)
        2
    """
    redirect = flag("redirect", redirect)
    count = 0
    for relu in _relus(model):
        relu.redirect = redirect
        count += 1
    return count


@contextmanager
def redirecting(model: nn.Module, redirect: bool = True) -> Iterator[int]:
    """Switch the model's :class:`RedirectedReLU`\\ s inside the block; restored after.

    Yields the number of switchable ReLUs (0 for models built with plain ``nn.ReLU``).

    Example:
        >>> net = nn.Sequential(RedirectedReLU())
        >>> with redirecting(net) as count:
        ...     count, net[0].redirect
        (1, True)
        >>> net[0].redirect
        False
    """
    relus = list(_relus(model))
    before = [relu.redirect for relu in relus]
    try:
        for relu in relus:
            relu.redirect = redirect
        yield len(relus)
    finally:
        for relu, flag in zip(relus, before, strict=True):
            relu.redirect = flag
