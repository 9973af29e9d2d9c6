"""GPU correctness: the engine on CUDA gives what it gives on the CPU.

Skipped without a CUDA device (CI has none); ``benchmarks/gpu_check.sh`` runs these on a GPU
machine together with the speed benchmark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lucent_core import atlas, objectives, param, render_vis
from lucent_core.hooks import capture, run_to_layers
from lucent_core.models import Preprocessing
from lucent_core.models.inceptionv1 import InceptionV1
from lucent_core.relu import redirecting

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

LAYERS = ["conv2d2", "mixed3a", "mixed4a", "mixed5b"]


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return InceptionV1(redirected_relu=True).eval()


def activations(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad(), capture(model, LAYERS) as acts:
        run_to_layers(model, model.preprocessing(x), acts)
        return {name: value.float().cpu() for name, value in acts.items()}


def test_inceptionv1_on_cuda_matches_the_cpu(inception):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    on_cpu = activations(inception, x)
    on_gpu = activations(inception.cuda(), x.cuda())
    inception.cpu()
    for name in LAYERS:
        scale = on_cpu[name].abs().max().item()
        torch.testing.assert_close(on_gpu[name], on_cpu[name], rtol=0, atol=1e-3 * scale,
                                   msg=f"{name} differs between CUDA and the CPU")


def test_redirected_relu_gradients_on_cuda_match_the_cpu(inception):
    x = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(2))

    def input_gradient(model, x):
        x = x.clone().requires_grad_(True)
        with redirecting(model, True), capture(model, ["mixed4a"]) as acts:
            run_to_layers(model, model.preprocessing(x), acts)
            acts["mixed4a"][:, 476].mean().backward()
        return x.grad.float().cpu()

    on_cpu = input_gradient(inception, x)
    on_gpu = input_gradient(inception.cuda(), x.cuda())
    inception.cpu()
    scale = on_cpu.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=2e-3 * scale)


@pytest.mark.parametrize("options", [{}, {"autocast": torch.bfloat16},
                                     {"autocast": torch.float16}, {"channels_last": False},
                                     {"compile": True}], ids=str)
def test_a_render_on_cuda_raises_its_unit(inception, options):
    model = inception.cuda()
    objective = objectives.channel("mixed4a", 476)
    result = render_vis(model, objective, param_f=lambda: param.image(96, batch=2),
                        thresholds=(1, 48), seed=0, progress=False, **options)
    model.cpu()
    assert np.isfinite(result.image).all()
    assert result.history[-1] > result.history[0] + 0.5 * abs(result.history[0])


def test_an_atlas_on_cuda_renders_a_unit_the_same_alone_as_in_a_batch(tmp_path):
    torch.manual_seed(0)
    tiny = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, stride=2), nn.ReLU()).cuda()
    fast = {"steps": 12, "size": 24, "progress": False}
    atlas.render_atlas(tiny, tmp_path / "batch", "2", batch=6, **fast)
    atlas.render_atlas(tiny, tmp_path / "alone", "2", units="4", batch=1, **fast)

    def pixels(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB")).astype(int)

    alone = pixels(tmp_path / "alone/2/units/00004.png")
    batch = pixels(tmp_path / "batch/2/units/00004.png")
    assert np.abs(alone - batch).max() <= 1, "CUDA kernels may differ in the last bit, no more"


@pytest.mark.parametrize("objective", [
    objectives.batch_channels("mixed4a", [476, 3]),
    objectives.direction("mixed4a", torch.randn(508)) - 1e2 * objectives.diversity("mixed4a"),
], ids=["batch_channels", "direction-diversity"])
def test_render_steps_do_not_wait_for_the_gpu(inception, objective):
    """No step synchronises host and device: more steps add no synchronising calls (the
    ones left happen once, at set-up and at the threshold that reads the results)."""
    import warnings
    model = inception.cuda()
    imagenet = Preprocessing(value_range=(-117.0, 138.0), mean=(0.1, 0.2, 0.3),
                             std=(1.0, 1.1, 0.9))  # mean/std: the per-channel constants

    def synchronising_calls(steps: int) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                render_vis(model, objective, param_f=lambda: param.image(64, batch=2),
                           thresholds=(steps,), seed=0, progress=False, preprocess=imagenet)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchronizing" in str(w.message) for w in caught)

    synchronising_calls(2)  # warm-up: first-use allocations and caches
    few, many = synchronising_calls(3), synchronising_calls(13)
    model.cpu()
    assert many == few, f"{many - few} synchronising calls in 10 more steps"
