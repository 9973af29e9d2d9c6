"""InceptionV1 (GoogLeNet) as the Lucid tradition knows it: Google's ``inception5h`` graph.

This is the network of Lucid, Lucent, Distill's Circuits thread and OpenAI Microscope:
GoogLeNet without batch norm, with local response normalisation (LRN), 1008 output classes
(index 0 is a dummy background class in the ``inception5h`` label file). Layer names follow
that graph (``conv2d2``, ``mixed4a``, ``mixed4a_3x3_bottleneck``, ...), so the units that
papers cite (``mixed4a_pre_relu:476``) mean the same thing here.

Weights: the state dict keys and shapes are exactly those of the widely used conversion
``inception5h.pth`` (116 keys, 7,066,380 values, e.g. ``mixed3a_1x1_pre_relu_conv.weight``),
so ``model.load_state_dict(torch.load(path, weights_only=True))`` works unchanged.

Input: RGB, ``(B, 3, H, W)``, pixel values on the [-117, 138] scale, i.e.
``rgb * 255 - 117`` for ``rgb`` in [0, 1] (see :data:`INCEPTIONV1_VALUE_RANGE`); the model
does not preprocess. The head uses global average pooling, so any input of at least about
32 pixels a side works; at 224 x 224 this equals the original 7 x 7 average pool.

Example:
    >>> import torch
    >>> from lucent_core.hooks import capture, run_to_layers
    >>> model = InceptionV1().eval()
    >>> model.load_state_dict(torch.load("inception5h.pth", weights_only=True))  # doctest: +SKIP
    >>> x = torch.rand(1, 3, 224, 224) * 255 - 117
    >>> with capture(model, ["mixed4a_pre_relu", "mixed4a_3x3"]) as acts:
    ...     _ = run_to_layers(model, x, acts)
    >>> acts["mixed4a_pre_relu"].shape, acts["mixed4a_3x3"].shape
    (torch.Size([1, 508, 14, 14]), torch.Size([1, 204, 14, 14]))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lucent_core.preprocessing import Preprocessing
from lucent_core.relu import RedirectedReLU

__all__ = ["BranchWidths", "INCEPTIONV1_BLOCKS", "INCEPTIONV1_LRN", "INCEPTIONV1_NUM_CLASSES",
           "INCEPTIONV1_VALUE_RANGE", "InceptionBlock", "InceptionV1", "LocalResponseNorm",
           "PaddedMaxPool2d"]

#: What the model expects where a rendered image has 0 and 1: ``pixel * 255 - 117``.
INCEPTIONV1_VALUE_RANGE = (-117.0, 138.0)

#: Output classes of ``softmax2`` (index 0 is the dummy background class of ``inception5h``).
INCEPTIONV1_NUM_CLASSES = 1008

#: LRN parameters (torch's convention, see :class:`LocalResponseNorm`) of the PyTorch
#: conversion that ``inception5h.pth`` comes with, as Lucent and Captum use it.
INCEPTIONV1_LRN = {"size": 9, "alpha": 9.99999974738e-05, "beta": 0.5, "k": 1.0}

#: Padding (left, right, top, bottom) of the input to ``conv2d0`` (7x7, stride 2).
_CONV2D0_PADDING = (2, 3, 2, 3)

#: Padding (left, right, top, bottom), with -inf, of the stride-2 max pools.
_MAXPOOL_PADDING = (0, 1, 0, 1)


class BranchWidths(NamedTuple):
    """Output channels of the six convolutions of an :class:`InceptionBlock`.

    The block's output has ``c1x1 + c3x3 + c5x5 + pool_reduce`` channels (see :attr:`out`).
    """

    c1x1: int
    c3x3_bottleneck: int
    c3x3: int
    c5x5_bottleneck: int
    c5x5: int
    pool_reduce: int

    @property
    def out(self) -> int:
        """Channels of the block output (the concatenation of the four branches)."""
        return self.c1x1 + self.c3x3 + self.c5x5 + self.pool_reduce


#: The nine inception blocks in network order, with their branch widths (from the shapes of
#: the ``inception5h`` state dict).
INCEPTIONV1_BLOCKS: dict[str, BranchWidths] = {
    "mixed3a": BranchWidths(64, 96, 128, 16, 32, 32),
    "mixed3b": BranchWidths(128, 128, 192, 32, 96, 64),
    "mixed4a": BranchWidths(192, 96, 204, 16, 48, 64),
    "mixed4b": BranchWidths(160, 112, 224, 24, 64, 64),
    "mixed4c": BranchWidths(128, 128, 256, 24, 64, 64),
    "mixed4d": BranchWidths(112, 144, 288, 32, 64, 64),
    "mixed4e": BranchWidths(256, 160, 320, 32, 128, 128),
    "mixed5a": BranchWidths(256, 160, 320, 48, 128, 128),
    "mixed5b": BranchWidths(384, 192, 384, 48, 128, 128),
}

#: The stride-2 max pool that runs before a block, by block name.
_POOL_BEFORE = {"mixed4a": "maxpool4", "mixed5a": "maxpool10"}


class LocalResponseNorm(nn.Module):
    """Local response normalisation across channels: torch's formula, computed faster.

    The same function as :func:`torch.nn.functional.local_response_norm` (and
    :class:`torch.nn.LocalResponseNorm`), with the same parameters::

        window = x[:, c - size // 2 : c + (size - 1) // 2 + 1]
        out[:, c] = x[:, c] / (k + alpha / size * sum(window ** 2, dim=1)) ** beta

    the window clipped at the first and last channel (torch's zero padding). Note the
    ``alpha / size``: torch's ``alpha`` scales the *mean* of the squares, TensorFlow's the
    *sum*, so a TensorFlow LRN with ``depth_radius=r, bias=b, alpha=a`` is this module with
    ``size=2r+1, k=b, alpha=a*(2r+1)``. On 4-d input the windowed sum is one 1x1 convolution
    with a banded C x C matrix: several times faster than torch's pooling forward and
    backward, and it keeps channels-last layout.

    Args:
        size: number of channels in the window.
        alpha: scale of the mean of squares (torch's ``alpha``).
        beta: exponent.
        k: additive constant (TensorFlow's ``bias``).

    Shape:
        Input ``(B, C, *)``, output the same shape.

    Example:
        >>> lrn = LocalResponseNorm(size=1, alpha=1.0, beta=0.5, k=0.0)
        >>> lrn(torch.tensor([[[[3.0]], [[-4.0]]]])).flatten()   # x / |x| with a window of 1
        tensor([ 1., -1.])
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
                 ) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        channels = torch.arange(x.shape[1], device=x.device)
        offset = channels[None, :] - channels[:, None]        # input channel - output channel
        band = (offset >= -(self.size // 2)) & (offset <= (self.size - 1) // 2)
        weight = (band.to(x.dtype) * (self.alpha / self.size))[:, :, None, None]
        bias = torch.full((x.shape[1],), self.k, device=x.device, dtype=x.dtype)
        denominator = F.conv2d(x * x, weight, bias)
        if self.beta == 0.5:
            return x * torch.rsqrt(denominator)
        return x * denominator.pow(-self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class PaddedMaxPool2d(nn.Module):
    """Max pool of an input first padded with ``-inf`` (so padding never wins the max).

    Args:
        kernel_size: pooling window.
        stride: pooling stride.
        padding: ``(left, right, top, bottom)``, as for :func:`torch.nn.functional.pad`.

    Shape:
        Input ``(B, C, H, W)``; output ``(B, C, H_out, W_out)`` with
        ``H_out = (H + top + bottom - kernel_size) // stride + 1`` (likewise ``W_out``).

    Example:
        >>> pool = PaddedMaxPool2d(3, 2, (0, 1, 0, 1))
        >>> pool(-torch.ones(1, 1, 4, 4))   # zero padding would give 0 at the edge
        tensor([[[[-1., -1.],
                  [-1., -1.]]]])
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2,
                 padding: tuple[int, int, int, int] = _MAXPOOL_PADDING) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = tuple(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.padding, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class InceptionBlock(nn.Module):
    """One inception block (``mixedXY``): four branches concatenated along channels.

    Branches, in concatenation order: ``1x1`` (1x1 conv); ``3x3`` (1x1 ``3x3_bottleneck``
    conv, ReLU, 3x3 conv with padding 1); ``5x5`` (1x1 ``5x5_bottleneck`` conv, ReLU, 5x5 conv
    with padding 2); ``pool_reduce`` (3x3 stride-1 max pool padded by 1 with -inf, then 1x1
    conv). Each branch ends in a ReLU. Every ReLU is a :class:`RedirectedReLU`.

    Children (``named_modules()`` names; inside :class:`InceptionV1` they are reached as
    ``mixed4a.3x3`` or, with the underscore spelling, ``mixed4a_3x3``), for each convolution
    ``name`` in ``1x1, 3x3_bottleneck, 5x5_bottleneck, pool_reduce, 3x3, 5x5``:

    * ``{name}_pre_relu_conv``: the ``nn.Conv2d`` holding the weights;
    * ``{name}_pre_relu``: ``nn.Identity`` whose output is the pre-ReLU activation;
    * ``{name}``: the :class:`RedirectedReLU` whose output is the post-ReLU activation;

    plus ``pool`` (the branch max pool) and ``pre_relu``, an ``nn.Identity`` whose output is the
    concatenation of the four branch pre-ReLU activations (Lucid's ``mixedXY_pre_relu``). The
    block's own output is the concatenation of the four post-ReLU branch outputs, which is
    ``relu(pre_relu)``.

    The branches run in the order of the children above (the four convolutions that read the
    block input first), so an early-stopping capture of a branch skips the rest.

    Args:
        in_channels: channels of the block input.
        widths: branch widths (see :class:`BranchWidths`).
        redirected_relu: initial ``redirect`` flag of the block's ReLUs.

    Shape:
        Input ``(B, in_channels, H, W)``, output ``(B, widths.out, H, W)``.

    Example:
        >>> block = InceptionBlock(192, INCEPTIONV1_BLOCKS["mixed3a"])
        >>> block(torch.zeros(1, 192, 28, 28)).shape
        torch.Size([1, 256, 28, 28])
    """

    #: Convolutions in registration (and execution) order: (name, kernel size, input).
    _CONVS = (("1x1", 1, "input"), ("3x3_bottleneck", 1, "input"),
              ("5x5_bottleneck", 1, "input"), ("pool_reduce", 1, "pool"),
              ("3x3", 3, "3x3_bottleneck"), ("5x5", 5, "5x5_bottleneck"))

    #: The branch outputs, in concatenation order.
    BRANCHES = ("1x1", "3x3", "5x5", "pool_reduce")

    def __init__(self, in_channels: int, widths: BranchWidths | Iterable[int],
                 redirected_relu: bool = False) -> None:
        super().__init__()
        self.widths = BranchWidths(*widths)
        self.in_channels = in_channels
        channels = {"input": in_channels, "pool": in_channels,
                    "3x3_bottleneck": self.widths.c3x3_bottleneck,
                    "5x5_bottleneck": self.widths.c5x5_bottleneck}
        out = {"1x1": self.widths.c1x1, "3x3_bottleneck": self.widths.c3x3_bottleneck,
               "5x5_bottleneck": self.widths.c5x5_bottleneck,
               "pool_reduce": self.widths.pool_reduce, "3x3": self.widths.c3x3,
               "5x5": self.widths.c5x5}
        for name, kernel, source in self._CONVS:
            if name == "pool_reduce":
                self.add_module("pool", nn.MaxPool2d(3, stride=1, padding=1))  # pads with -inf
            self.add_module(f"{name}_pre_relu_conv",
                            nn.Conv2d(channels[source], out[name], kernel, padding=kernel // 2))
            self.add_module(f"{name}_pre_relu", nn.Identity())
            self.add_module(name, RedirectedReLU(redirected_relu))
        self.pre_relu = nn.Identity()

    @property
    def out_channels(self) -> int:
        """Channels of the block output."""
        return self.widths.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre: dict[str, torch.Tensor] = {}
        post: dict[str, torch.Tensor] = {"input": x}
        for name, _, source in self._CONVS:
            inp = post[source] if source != "pool" else self.pool(x)
            pre[name] = self._modules[f"{name}_pre_relu"](
                self._modules[f"{name}_pre_relu_conv"](inp))
            post[name] = self._modules[name](pre[name])
        self.pre_relu(torch.cat([pre[name] for name in self.BRANCHES], dim=1))
        return torch.cat([post[name] for name in self.BRANCHES], dim=1)


class InceptionV1(nn.Module):
    """Lucid's InceptionV1 (``inception5h`` GoogLeNet), with ``inception5h.pth`` state dict keys.

    Layer plan (output channels; spatial size for a 224 x 224 input)::

        conv2d0                 7x7 stride-2 conv, input padded (left 2, right 3,     64  112
                                top 2, bottom 3), ReLU
        maxpool0                3x3 stride-2 max pool, padded right/bottom by 1       64   56
                                with -inf
        localresponsenorm0      LRN (INCEPTIONV1_LRN: size 9, alpha 1e-4, beta 0.5,   64   56
                                k 1, torch's convention)
        conv2d1                 1x1 conv, ReLU                                        64   56
        conv2d2                 3x3 conv (padding 1), ReLU                           192   56
        localresponsenorm1      LRN                                                  192   56
        maxpool1                as maxpool0                                          192   28
        mixed3a, mixed3b        InceptionBlock                                   256, 480  28
        maxpool4                as maxpool0                                          480   14
        mixed4a .. mixed4e      InceptionBlock                                 508 .. 832  14
        maxpool10               as maxpool0                                          832    7
        mixed5a, mixed5b        InceptionBlock                                  832, 1024   7
        avgpool0                global average pool, flattened                      1024
        softmax2_pre_activation_matmul   Linear 1024 -> 1008: the class logits      1008
        softmax2                Softmax over the logits                             1008

    Hookable names (``named_modules()`` names, or the underscore spelling accepted by
    :mod:`lucent_core.hooks`):

    * ``conv2d0``, ``conv2d1``, ``conv2d2`` (post-ReLU), ``conv2dN_pre_relu`` (pre-ReLU) and
      ``conv2dN_pre_relu_conv`` (the ``nn.Conv2d``; same output as ``conv2dN_pre_relu``);
    * ``maxpool0``, ``maxpool1``, ``maxpool4``, ``maxpool10``, ``localresponsenorm0/1``;
    * ``mixedXY`` (post-ReLU block output), ``mixedXY_pre_relu`` (the concatenated branch
      pre-ReLU outputs; module ``mixedXY.pre_relu``), and per branch ``mixedXY_1x1``,
      ``mixedXY_3x3_bottleneck``, ``mixedXY_3x3``, ``mixedXY_5x5_bottleneck``, ``mixedXY_5x5``,
      ``mixedXY_pool_reduce``, each with ``_pre_relu`` (see :class:`InceptionBlock`);
    * ``softmax2_pre_activation_matmul`` (the class logits) and ``softmax2`` (probabilities).

    ``forward`` returns the **logits** (``softmax2_pre_activation_matmul``), so the pseudo-layer
    ``"labels:N"`` / ``"logits"`` of :mod:`lucent_core.hooks` means logit ``N``. It still runs
    the ``softmax2`` module last, so hooking ``softmax2`` gives the probabilities that are the
    output of Lucid's graph.

    State dict: keys and shapes are exactly those of ``inception5h.pth``. Block parameters live
    in the block modules (``mixed3a.1x1_pre_relu_conv.weight`` in ``named_parameters()``);
    a state-dict hook flattens the first dot after a block name
    (``mixed3a_1x1_pre_relu_conv.weight``) and a load pre-hook accepts that spelling (the dotted
    one loads too). Missing keys are reported in the flat spelling. This also works when the
    model is nested in another module (the keys then carry that module's prefix). A block's
    own ``state_dict()`` has its local keys (``1x1_pre_relu_conv.weight``). There are no
    buffers.

    Input padding: ``conv2d0``'s (2, 3) and the max pools' (0, 1) paddings are the fixed
    paddings of the graph at 224 x 224. TensorFlow's ``"SAME"`` padding equals them whenever
    the input of each stride-2 layer has even height and width (224, 160, 128, ...); for odd
    sizes TensorFlow would pad symmetrically instead, this model does not.

    LRN: :data:`INCEPTIONV1_LRN`, the parameters of the PyTorch conversion (size 9,
    alpha 1e-4 on the mean of squares, k 1, beta 0.5), so activations equal Lucent's and
    Captum's for the same weights. Others who read Lucid's TensorFlow graph report different
    LRN attributes (``depth_radius`` 5, ``bias`` 2, ``alpha`` 1e-4 on the *sum*, ``beta``
    0.5); that was not checked here (no TensorFlow graph offline). To try it, build
    ``InceptionV1(lrn={"size": 11, "alpha": 11e-4, "beta": 0.5, "k": 2.0})`` and load the
    same weights.

    Args:
        redirected_relu: initial ``redirect`` flag of every ReLU (all are
            :class:`RedirectedReLU`; switch later with
            :func:`lucent_core.relu.set_redirected_relu`).
        lrn: parameters of both LRN layers (:class:`LocalResponseNorm`'s arguments).

    Shape:
        Input ``(B, 3, H, W)``, RGB on the [-117, 138] scale (:data:`INCEPTIONV1_VALUE_RANGE`),
        H and W at least about 32; output ``(B, 1008)`` logits.

    Attributes:
        preprocessing: a :class:`~lucent_core.preprocessing.Preprocessing` mapping images in
            [0, 1] to the expected input (it is not applied by ``forward``).

    Example:
        >>> model = InceptionV1().eval()
        >>> len(model.state_dict()), sum(p.numel() for p in model.parameters())
        (116, 7066380)
        >>> rgb = torch.rand(2, 3, 160, 200)
        >>> logits = model(model.preprocessing(rgb))
        >>> logits.shape
        torch.Size([2, 1008])
    """

    def __init__(self, redirected_relu: bool = False, lrn: dict | None = None) -> None:
        super().__init__()
        self.preprocessing = Preprocessing(value_range=INCEPTIONV1_VALUE_RANGE)
        lrn = INCEPTIONV1_LRN if lrn is None else lrn
        self._stem_conv("conv2d0", 3, 64, 7, redirected_relu, stride=2, padding=0)
        self.maxpool0 = PaddedMaxPool2d(3, 2, _MAXPOOL_PADDING)
        self.localresponsenorm0 = LocalResponseNorm(**lrn)
        self._stem_conv("conv2d1", 64, 64, 1, redirected_relu)
        self._stem_conv("conv2d2", 64, 192, 3, redirected_relu, padding=1)
        self.localresponsenorm1 = LocalResponseNorm(**lrn)
        self.maxpool1 = PaddedMaxPool2d(3, 2, _MAXPOOL_PADDING)
        channels = 192
        for name, widths in INCEPTIONV1_BLOCKS.items():
            if name in _POOL_BEFORE:
                self.add_module(_POOL_BEFORE[name], PaddedMaxPool2d(3, 2, _MAXPOOL_PADDING))
            block = InceptionBlock(channels, widths, redirected_relu)
            self.add_module(name, block)
            channels = block.out_channels
        self.avgpool0 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.softmax2_pre_activation_matmul = nn.Linear(channels, INCEPTIONV1_NUM_CLASSES)
        self.softmax2 = nn.Softmax(dim=1)
        _register_state_dict_hooks(self)

    def _stem_conv(self, name: str, in_channels: int, out_channels: int, kernel: int,
                   redirected_relu: bool, stride: int = 1, padding: int = 0) -> None:
        self.add_module(f"{name}_pre_relu_conv",
                        nn.Conv2d(in_channels, out_channels, kernel, stride=stride,
                                  padding=padding))
        self.add_module(f"{name}_pre_relu", nn.Identity())
        self.add_module(name, RedirectedReLU(redirected_relu))

    def _run_stem_conv(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = self._modules[f"{name}_pre_relu_conv"](x)
        x = self._modules[f"{name}_pre_relu"](x)
        return self._modules[name](x)

    def block_names(self) -> list[str]:
        """Names of the inception blocks, in network order (``mixed3a`` .. ``mixed5b``)."""
        return [name for name, module in self.named_children()
                if isinstance(module, InceptionBlock)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for preprocessed images.

        Args:
            x: ``(B, 3, H, W)`` RGB on the [-117, 138] scale (see the class docstring).

        Returns:
            ``(B, 1008)`` logits (``softmax2_pre_activation_matmul``); hook ``softmax2`` for
            the probabilities.
        """
        x = self._run_stem_conv("conv2d0", F.pad(x, _CONV2D0_PADDING))
        x = self.localresponsenorm0(self.maxpool0(x))
        x = self._run_stem_conv("conv2d1", x)
        x = self._run_stem_conv("conv2d2", x)
        x = self.maxpool1(self.localresponsenorm1(x))
        for name in INCEPTIONV1_BLOCKS:
            if name in _POOL_BEFORE:
                x = self._modules[_POOL_BEFORE[name]](x)
            x = self._modules[name](x)
        logits = self.softmax2_pre_activation_matmul(self.avgpool0(x))
        self.softmax2(logits)
        return logits


# --- state dict key mapping ---------------------------------------------------------------
# Inside the model a block's parameter is "mixed3a.1x1_pre_relu_conv.weight"; in
# inception5h.pth it is "mixed3a_1x1_pre_relu_conv.weight". The hooks below translate, on the
# InceptionV1 module itself: the load pre-hook must run on the parent of the blocks, because
# a strict load flags a key as unexpected at the first module whose children do not match it.

def _flat_key(model: InceptionV1, key: str, prefix: str) -> str:
    """``{prefix}mixed3a.rest`` -> ``{prefix}mixed3a_rest``; any other key unchanged."""
    if not key.startswith(prefix):
        return key
    head, dot, rest = key[len(prefix):].partition(".")
    if dot and isinstance(model._modules.get(head), InceptionBlock):
        return f"{prefix}{head}_{rest}"
    return key


def _state_dict_post_hook(model: InceptionV1, state_dict: dict[str, Any], prefix: str,
                          local_metadata: dict[str, Any]) -> None:
    """Rename block keys to the flat spelling, in place, keeping the order of the keys."""
    for key in [key for key in state_dict if key.startswith(prefix)]:
        state_dict[_flat_key(model, key, prefix)] = state_dict.pop(key)


def _legacy_state_dict_hook(model: InceptionV1, state_dict: dict[str, Any], prefix: str,
                            local_metadata: dict[str, Any]) -> None:
    """:func:`_state_dict_post_hook` for the private API of older torch.

    A separate function: the public API marks the function it registers, and torch refuses to
    register a marked function through the private API.
    """
    _state_dict_post_hook(model, state_dict, prefix, local_metadata)


def _load_state_dict_pre_hook(model: InceptionV1, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
    """Rename flat block keys of ``state_dict`` (the loader's own copy) to module paths."""
    for name in model.block_names():
        block = model._modules[name]
        for local, _ in list(block.named_parameters()) + list(block.named_buffers()):
            flat, dotted = f"{prefix}{name}_{local}", f"{prefix}{name}.{local}"
            if flat in state_dict and dotted not in state_dict:
                state_dict[dotted] = state_dict.pop(flat)


def _load_state_dict_post_hook(model: InceptionV1, incompatible_keys: Any) -> None:
    """Report missing block keys in the flat spelling that a state dict file uses."""
    flat = {f"{name}.{local}": f"{name}_{local}" for name in model.block_names()
            for local, _ in model._modules[name].named_parameters()}
    missing = incompatible_keys.missing_keys
    for i, key in enumerate(missing):
        for dotted, spelled in flat.items():
            if key == dotted or key.endswith("." + dotted):
                missing[i] = key[: len(key) - len(dotted)] + spelled
                break


def _register_state_dict_hooks(model: InceptionV1) -> None:
    """Register the key-mapping hooks, with the public APIs where torch has them."""
    if hasattr(model, "register_state_dict_post_hook"):  # public in recent torch
        model.register_state_dict_post_hook(_state_dict_post_hook)
    else:  # older torch: in-place changes are honoured by the private API too
        model._register_state_dict_hook(_legacy_state_dict_hook)
    if hasattr(model, "register_load_state_dict_pre_hook"):
        model.register_load_state_dict_pre_hook(_load_state_dict_pre_hook)
    else:
        model._register_load_state_dict_pre_hook(_load_state_dict_pre_hook, with_module=True)
    model.register_load_state_dict_post_hook(_load_state_dict_post_hook)
