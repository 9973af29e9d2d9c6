"""Capturing activations of named layers, with scoped hooks and an early-stopping forward.

Layers are addressed by the dotted names of ``model.named_modules()`` (``"layer4.1.conv1"``);
the Lucent-style underscore spelling (``"layer4_1_conv1"``) is accepted too. The pseudo-layer
``"output"`` (aliases ``"labels"``, ``"logits"``) is the model's return value.
"""

from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from lucent_core.validate import instance

OUTPUT_LAYER = "output"
OUTPUT_ALIASES = ("output", "labels", "logits")
#: The pseudo-layer holding the rendered image itself (the parameterisation's output, before
#: transforms), for objectives on the image: regularisers, alpha penalties.
INPUT_LAYER = "input"

__all__ = ["INPUT_LAYER", "LayerInfo", "OUTPUT_LAYER", "TRANSFORMER_BLOCKS", "UnknownLayerError",
           "capture", "frozen", "is_compiling", "is_transformer_block", "list_layers",
           "model_device", "model_revision", "registry_name", "resolve_layer", "run_to_layers",
           "same_layer", "token_major_layers"]

#: The transformer blocks, as ``{module of the class (or its package): class names}``, known
#: by name so that no library is imported to look (subclasses count too). Every layer they
#: contain, themselves included, gives token-major activations: ``(batch, tokens, channels)``
#: (sequence-first ``(tokens, batch, channels)`` in older open_clip), not ``(batch,
#: channels, ...)``. Add your own library's blocks here.
TRANSFORMER_BLOCKS: dict[str, set[str]] = {
    "torch.nn.modules.transformer": {"Transformer", "TransformerEncoder",
                                     "TransformerEncoderLayer", "TransformerDecoder",
                                     "TransformerDecoderLayer"},
    "torch.nn.modules.activation": {"MultiheadAttention"},
    "torchvision.models.vision_transformer": {"Encoder", "EncoderBlock"},
    "open_clip": {"Transformer", "ResidualAttentionBlock", "CustomResidualAttentionBlock"},
}

is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # torch >= 2.3


class _StopForward(BaseException):
    """Raised inside a hook once every requested layer has been captured.

    A ``BaseException`` so that a model whose forward catches ``Exception`` cannot swallow it.
    """

    def __init__(self) -> None:
        super().__init__("capture() stopped the forward pass once its layers were reached: "
                         "run it with run_to_layers(model, x, acts), which absorbs the stop, "
                         "or use capture(..., stop_early=False) to call model(x) yourself")


def _module_names(model: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules() if name}


_LIST_LAYERS_UP_TO = 20  # an unknown layer of a model this small: the error lists them all


class UnknownLayerError(ValueError):
    """A layer name that the model does not have; the message lists close matches (layers
    whose name ends with it first, then the closest; each once) and how to list all layers.

    ``describe(how_to_list)`` words the message for another audience (the command line says
    ``lucent-core layers --model M`` where Python says ``list_layers(model)``).
    """

    def __init__(self, name: str, close_matches: Sequence[str],
                 all_layers: Sequence[str] = ()) -> None:
        self.name, self.close_matches = name, list(close_matches)
        self.all_layers = list(all_layers)  # given for small models only
        super().__init__(self.describe("List all layers with lucent_core.list_layers(model)."))

    def describe(self, how_to_list: str) -> str:
        if self.close_matches:
            return (f"unknown layer {self.name!r}. Close matches: "
                    f"{', '.join(self.close_matches)}. {how_to_list}")
        if self.all_layers:
            return f"unknown layer {self.name!r}; the model's layers: {', '.join(self.all_layers)}"
        return f"unknown layer {self.name!r}. {how_to_list}"


def resolve_layer(model: nn.Module, name: str) -> str:
    """Return the canonical dotted module name for ``name``, or ``OUTPUT_LAYER``.

    Args:
        model: the network.
        name: a dotted ``named_modules()`` name, its underscore spelling, or ``"output"``
            (aliases ``"labels"``, ``"logits"``) for the model's return value.

    Raises:
        UnknownLayerError: (a ValueError) for unknown names, listing close matches and how to
            list all layers.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> resolve_layer(net, "0"), resolve_layer(net, "labels")
        ('0', 'output')
    """
    instance("name", name, str, "a layer name such as 'mixed4a'")
    modules = _module_names(model)
    if name in modules:
        return name
    underscored = {}
    for dotted in modules:
        underscored.setdefault(dotted.replace(".", "_"), []).append(dotted)
    if name in underscored:
        matches = underscored[name]
        if len(matches) > 1:
            raise ValueError(f"layer {name!r} is ambiguous: any of {matches}; use the dotted name")
        return matches[0]
    if name in OUTPUT_ALIASES:
        return OUTPUT_LAYER
    # layers whose name ends with it ("encoder_layer_2" of a ViT), then the closest first;
    # each layer once, in the spelling that came closest
    spellings = {**{u: dotted[0] for u, dotted in underscored.items()}, **{m: m for m in modules}}
    ending = [m for m in modules if f".{m}".endswith(f".{name}")
              or ("_" in name and f"_{m}".replace(".", "_").endswith(f"_{name}"))]
    close: dict[str, str] = {}
    for spelling in ending + difflib.get_close_matches(name, list(spellings), n=10, cutoff=0.6):
        close.setdefault(spellings[spelling], spelling)
    small = list(modules) if len(modules) <= _LIST_LAYERS_UP_TO else []
    raise UnknownLayerError(name, list(close.values())[:5], small)


def is_transformer_block(module: nn.Module) -> bool:
    """Whether ``module``'s class (or a class it derives from) is one of
    :data:`TRANSFORMER_BLOCKS`: torch's ``nn.TransformerEncoderLayer`` and
    ``nn.MultiheadAttention``, torchvision's ViT ``EncoderBlock`` and ``Encoder``, open_clip's
    ``ResidualAttentionBlock`` and ``Transformer``, ...

    Example:
        >>> is_transformer_block(nn.TransformerEncoderLayer(8, 2)), is_transformer_block(
        ...     nn.Conv1d(3, 4, 3))
        (True, False)
    """
    return any(cls.__name__ in names and (cls.__module__ == where
                                          or cls.__module__.startswith(where + "."))
               for cls in type(module).__mro__ for where, names in TRANSFORMER_BLOCKS.items())


def _token_major(modules: dict[str, nn.Module], canonical: dict[str, str]) -> set[str]:
    """The names whose module (``canonical``: name -> dotted module name) is a transformer
    block or lies inside one."""
    def inside(dotted: str) -> bool:
        parts = dotted.split(".")
        return any(is_transformer_block(modules[".".join(parts[:i])])
                   for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules)
    return {name for name, dotted in canonical.items() if dotted != OUTPUT_LAYER and inside(dotted)}


def token_major_layers(model: nn.Module, layers: Sequence[str]) -> set[str]:
    """The names among ``layers`` whose module is a transformer block or lies inside one: their
    activations are ``(batch, tokens, channels)``, not ``(batch, channels, ...)``.

    Example:
        >>> net = nn.Sequential(nn.TransformerEncoderLayer(8, 2), nn.Linear(8, 2))
        >>> sorted(token_major_layers(net, ["0", "0.linear1", "1"]))
        ['0', '0.linear1']
    """
    return _token_major(_module_names(model), {name: resolve_layer(model, name) for name in layers})


def same_layer(model: nn.Module, a: str, b: str) -> bool:
    """Whether two layer names (dotted, underscored, ...) mean one module of ``model``.

    Example:
        >>> net = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1)))
        >>> same_layer(net, "0.0", "0_0"), same_layer(net, "0", "0.0")
        (True, False)
    """
    try:
        return resolve_layer(model, a) == resolve_layer(model, b)
    except ValueError:  # a name this model does not have
        return False


@contextmanager
def capture(model: nn.Module, layers: Sequence[str], stop_early: bool = True
            ) -> Iterator[dict[str, torch.Tensor]]:
    """Hook ``layers`` of ``model``; inside the block, every forward fills the yielded dict.

    The hooks are removed when the block exits, whatever happens inside it (exceptions and
    ``KeyboardInterrupt`` included). With ``stop_early``, the forward pass is abandoned as soon
    as every requested layer has produced its output, so nothing past the deepest needed layer
    is computed; run the forward with :func:`run_to_layers`, which absorbs that stop.

    Args:
        model: the network.
        layers: layer names as accepted by :func:`resolve_layer` (or one name).
        stop_early: abandon the forward pass once all layers are captured.

    A module that runs more than once in a forward pass (a ReLU reused inside a torchvision
    ``BasicBlock``, say) is captured at its *first* call, with or without ``stop_early``.

    An activation that the rest of the forward pass overwrites in place (a later ReLU with
    ``inplace=True``, ``out += identity`` in a torchvision ResNet block) is noticed by
    :func:`run_to_layers`, which then keeps a copy of that layer and runs the forward again:
    the value is always the layer's own output.

    Yields:
        A dict from each requested name (as given) to its activation, filled by every
        :func:`run_to_layers` call (which clears it first). Calling ``model(x)`` directly
        inside the block does not refill layers already captured. Its ``token_major`` is the
        set of requested names whose module is, or lies inside, a transformer block (see
        :func:`is_transformer_block`): their activations are ``(batch, tokens, channels)``,
        which channel objectives refuse to read as ``(batch, channels, ...)``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
        >>> with capture(net, ["0"]) as acts:
        ...     _ = run_to_layers(net, torch.zeros(1, 3, 8, 8), acts)
        >>> acts["0"].shape
        torch.Size([1, 4, 6, 6])
    """
    if isinstance(layers, str):
        layers = [layers]  # one name, not its characters
    canonical = {name: resolve_layer(model, name) for name in layers}
    modules = _module_names(model)
    by_module: dict[str, list[str]] = {}
    for name, dotted in canonical.items():
        if dotted != OUTPUT_LAYER:
            by_module.setdefault(dotted, []).append(name)
    wants_output = OUTPUT_LAYER in canonical.values()
    acts = _Activations(requested=list(canonical), stop_early=stop_early and not wants_output,
                        output_names=[n for n, d in canonical.items() if d == OUTPUT_LAYER])
    acts.token_major = _token_major(modules, canonical)

    def make_hook(names: list[str]):
        def hook(_module, _inputs, output):
            if names[0] in acts:  # a module called again: keep its first output
                return
            # a copy where the forward changes it in place later on (seen by run_to_layers),
            # and always under torch.compile, where version counters cannot be read
            if isinstance(output, torch.Tensor) and (names[0] in acts.copied
                                                     or is_compiling()):
                output = output.clone()
            for name in names:
                acts[name] = output
            acts.versions[names[0]] = _version(output)
            if acts.stop_early and all(name in acts for name in acts.requested):
                raise _StopForward
        return hook

    handles = [modules[dotted].register_forward_hook(make_hook(names))
               for dotted, names in by_module.items()]
    try:
        yield acts
    finally:
        for handle in handles:
            handle.remove()


class _Activations(dict):
    """The dict yielded by :func:`capture`, carrying what :func:`run_to_layers` needs."""

    def __init__(self, requested: list[str], stop_early: bool, output_names: list[str]):
        super().__init__()
        self.requested = requested
        self.stop_early = stop_early
        self.output_names = output_names
        self.versions: dict[str, int | None] = {}  # version counter when captured
        self.copied: set[str] = set()  # layers the forward changes in place after capture
        self.token_major: set[str] = set()  # layers in transformer blocks: (B, tokens, C)
        self.seen_a_forward = False

    def changed_in_place(self) -> list[str]:
        """Captured layers whose tensor was written to later in the forward pass (a ReLU
        with ``inplace=True``, ``out += identity`` in a ResNet block)."""
        return [name for name, version in self.versions.items()
                if version is not None and _version(self[name]) != version]


def _version(value: object) -> int | None:
    """The tensor's in-place write counter, where there is one to read."""
    if not isinstance(value, torch.Tensor) or value.is_inference() or \
            is_compiling():
        return None
    return value._version


def run_to_layers(model: nn.Module, x: torch.Tensor, acts: dict[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` inside a :func:`capture` block and check every layer was reached.

    Returns:
        ``acts``, filled for this forward pass.

    Raises:
        RuntimeError: if a requested layer was not reached by the forward pass.
    """
    instance("acts", acts, _Activations, "the dict that capture() yields")
    # the first forward of a capture looks for in-place writes on a copy of the input, so that
    # a model that writes to its input cannot spoil the rerun (the copy passes gradients on)
    first = not acts.seen_a_forward and isinstance(x, torch.Tensor)
    output = _forward(model, x.clone() if first else x, acts)
    acts.seen_a_forward = True
    changed = acts.changed_in_place()
    if changed:  # keep copies of those layers from now on, and run this forward again
        acts.copied.update(changed)
        output = _forward(model, x, acts)
    if output is _STOPPED:
        return acts
    for name in acts.output_names:
        acts[name] = instance(f"layer {name!r} (model output)", output, torch.Tensor, "a tensor")
    missing = [name for name in acts.requested if name not in acts]
    if missing:
        raise RuntimeError(f"layer(s) {missing} were never reached by the forward pass: the "
                           "module exists but model.forward does not call it")
    return acts


_STOPPED = object()


def _forward(model: nn.Module, x: torch.Tensor, acts: _Activations) -> object:
    """``model(x)``, or ``_STOPPED`` when the capture stopped it early."""
    acts.clear()
    acts.versions.clear()
    try:
        return model(x)
    except _StopForward:
        return _STOPPED
    except RuntimeError as error:
        if isinstance(x, torch.Tensor) and x.dim() >= 3 and _INPUT_TOO_SMALL.search(str(error)):
            raise ValueError(f"image {tuple(x.shape[-2:])} is too small for the model: use a "
                             "larger size") from error
        raise


# how torch says that an input is smaller than a convolution or pooling window
_INPUT_TOO_SMALL = re.compile("Kernel size can't be greater than actual input size"
                              "|[Oo]utput size is too small")


def registry_name(model: nn.Module) -> str:
    """What records call a model: its registry name (zoo models), else its class name.

    Example:
        >>> registry_name(nn.Conv2d(3, 4, 1))
        'Conv2d'
    """
    return getattr(getattr(model, "config", None), "name", None) or type(model).__name__


def model_revision(model: nn.Module) -> int:
    """The revision of the model's definition (:class:`ModelConfig` ``.revision``), 1 without
    a config: what atlases and dataset examples record to refuse mixing two definitions.

    Example:
        >>> model_revision(nn.Conv2d(3, 4, 1))
        1
    """
    return getattr(getattr(model, "config", None), "revision", 1)


def model_device(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter or buffer (else CPU, float32)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no weight gradients inside the block; every module's mode and every
    parameter's ``requires_grad`` flag are restored after.

    Example:
        >>> net = nn.Linear(2, 2).train()
        >>> with frozen(net):
        ...     net.training, net.weight.requires_grad
        (False, False)
        >>> net.training, net.weight.requires_grad
        (True, True)
    """
    instance("model", model, nn.Module, "an nn.Module")
    modes = {m: m.training for m in model.modules()}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass(frozen=True)
class LayerInfo:
    """A hookable layer: its dotted name, module type and output shape (without batch)."""

    name: str
    type: str
    shape: tuple[int, ...] | None

    @property
    def channels(self) -> int | None:
        """Channel count (second dimension of the output), if the output is a tensor."""
        return self.shape[0] if self.shape else None


def list_layers(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> list[LayerInfo]:
    """Every named module of ``model`` with its output shape for one input of ``input_size``.

    Modules that do not run in the forward pass are listed with ``shape=None``.

    Args:
        model: the network (left unchanged; its mode is restored).
        input_size: ``(C, H, W)`` of one input image, already preprocessed.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> [(l.name, l.shape) for l in list_layers(net, (3, 8, 8))]
        [('0', (4, 6, 6)), ('1', (4, 6, 6))]
    """
    shapes: dict[str, tuple[int, ...]] = {}
    modules = _module_names(model)
    handles = []
    for name, module in modules.items():
        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(out.shape[1:])
        handles.append(module.register_forward_hook(hook))
    try:
        device, dtype = model_device(model)
        with frozen(model), torch.no_grad():
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return [LayerInfo(name, type(module).__name__, shapes.get(name))
            for name, module in modules.items()]
