"""Dataset examples: planted colour squares found exactly, receptive fields, resume, bad files."""

from __future__ import annotations

import errno
import gc
import json
import math
import random
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from lucent_core.recipes import examples as examples_module
from lucent_core.atlas import Series
from lucent_core.results import AtlasError, AtlasWriteError
from lucent_core.image_folder import load_square
from lucent_core.receptive_field import ReceptiveField, receptive_field
from lucent_core.recipes.examples import ExamplesSummary, _TopK, find_examples, load_examples

SIDE = 7      # planted squares and the colour detectors' kernels are SIDE x SIDE
SIZE = 32     # image size; the detectors' maps are (SIZE - SIDE + 1) = 26 wide
RED, GREEN, BLUE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)

# relative path -> (colour, strength t, top, left): the square is grey * (1 - t) + colour * t
PLANTED = {
    "a/red_strong.png": (RED, 1.0, 2, 5),
    "a/b/red_second.webp": (RED, 0.8, 20, 3),
    "c/red_third.JPG": (RED, 0.6, 10, 18),
    "red_fourth.png": (RED, 0.45, 13, 13),         # centred: the neuron's favourite
    "g/green_0.jpeg": (GREEN, 0.5, 18, 9),
    "g/green_1.png": (GREEN, 0.9, 4, 4),
    "d/e/blue.webp": (BLUE, 0.7, 0, 25),
    "blue_weak.png": (BLUE, 0.5, 25, 0),
    "blue_faint.jpeg": (BLUE, 0.35, 8, 8),
}
TWIN = "g/green_2.png"  # a byte-identical copy of g/green_1.png: a tie, the lower path wins
# unit -> the expected top 3 files, strongest first
EXPECTED = {
    0: ["a/red_strong.png", "a/b/red_second.webp", "c/red_third.JPG"],
    1: ["g/green_1.png", TWIN, "g/green_0.jpeg"],
    2: ["d/e/blue.webp", "blue_weak.png", "blue_faint.jpeg"],
}


def noise(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """Grey 0.5 with +-0.02 of colour noise."""
    return 0.5 + rng.uniform(-0.02, 0.02, (size, size, 3))


def save(pixels: np.ndarray, path: Path) -> None:
    """Save in the format of the suffix: PNG, lossless WebP or 4:4:4 JPEG of quality 95."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    suffix = path.suffix.lower()
    if suffix == ".webp":
        image.save(path, format="WEBP", lossless=True)
    elif suffix in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=95, subsampling=0)
    else:
        image.save(path, format="PNG")


def make_folder(root: Path, noise_files: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, (colour, strength, top, left) in PLANTED.items():
        pixels = noise(rng)
        square = pixels[top:top + SIDE, left:left + SIDE]
        pixels[top:top + SIDE, left:left + SIDE] = square * (1 - strength) + \
            np.array(colour) * strength
        save(pixels, root / name)
    shutil.copyfile(root / "g/green_1.png", root / TWIN)
    for i in range(noise_files):
        save(noise(rng), root / "noise" / f"n{i:02d}.{('png', 'jpg', 'webp')[i % 3]}")
    (root / "notes.txt").write_text("not an image suffix: never listed")
    (root / "a" / "readme.md").write_text("neither")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"))


def colour_net() -> nn.Module:
    """Unit c is the mean over a 7x7 window of (channel c - the other two): red, green, blue."""
    conv = nn.Conv2d(3, 3, SIDE)
    with torch.no_grad():
        signs = 2 * torch.eye(3) - 1
        conv.weight.copy_(signs[:, :, None, None].expand(3, 3, SIDE, SIDE) / SIDE ** 2)
        conv.bias.zero_()
    return nn.Sequential(conv)


def expected_peak(strength: float) -> float:
    # inside the square: (0.5 + t / 2) - 2 * (0.5 - t / 2)
    return 1.5 * strength - 0.5


def run(net, images, out, series="0", **kwargs) -> ExamplesSummary:
    kwargs = {"top": 3, "batch_size": 4, "progress": False, "size": SIZE, **kwargs}
    return find_examples(net, images, out, series, **kwargs)


def crop_pixels(out: Path, entry: dict) -> np.ndarray:
    return np.asarray(Image.open(out / entry["image"]).convert("RGB"))


# --- the answer ----------------------------------------------------------------------------

def test_planted_squares_are_the_exact_top_3_with_their_positions(folder, tmp_path):
    summary = run(colour_net(), folder, tmp_path, progress=True)
    data = load_examples(tmp_path, "0")
    files = len(PLANTED) + 1 + 20
    assert (summary.files, summary.scanned, summary.skipped, summary.units) == (files, files,
                                                                                 [], 3)
    assert (data["files"], data["scanned"], data["skipped"]) == (files, files, [])
    assert (data["format"], data["layer"], data["kind"], data["top"], data["size"]) == \
        (1, "0", "channel", 3, SIZE)
    assert data["images"] == str(folder)
    assert sorted(data["identity"]) == ["directions_sha256", "files_sha256", "kind", "layer",
                                        "model", "size", "top", "weights_sha256"]
    assert list(data["units"]) == ["0", "1", "2"]
    for unit, names in EXPECTED.items():
        found = data["units"][str(unit)]
        assert [e["source"] for e in found] == names
        for rank, (entry, name) in enumerate(zip(found, names)):
            colour, strength, top, left = PLANTED["g/green_1.png" if name == TWIN else name]
            # no padding, stride 1: map position (y, x) sees rows y..y+6, columns x..x+6
            assert entry["position"] == [top, left]
            assert entry["box"] == [top, left, top + SIDE, left + SIDE]
            assert entry["activation"] == pytest.approx(expected_peak(strength), abs=0.03)
            assert entry["image"] == f"examples/0/crops/{unit:05d}-{rank}.png"
            crop = crop_pixels(tmp_path, entry)
            assert crop.shape == (SIDE, SIDE, 3)
            # the crop is the planted square: every pixel leans to the unit's colour by
            # 255 * (2/3) * t (grey noise around it would not lean at all)
            lean = crop[..., unit].astype(int) - crop.astype(int).sum(-1) / 3
            assert lean.min() > 170 * strength - 15
            whole = load_square(folder / entry["source"], SIZE)
            assert np.array_equal(crop, whole[top:top + SIDE, left:left + SIDE])
    # the tie between two identical files keeps both, the lower path first
    assert data["units"]["1"][0]["activation"] == data["units"]["1"][1]["activation"]
    assert f"{files} image files" in str(summary) and "examples of 3 units" in str(summary)


def test_top_k_merge_is_exact_whatever_the_batches():
    rng = random.Random(0)
    units, k, count = 4, 5, 60
    values = torch.tensor([[float(rng.randrange(6)) for _ in range(units)]
                           for _ in range(count)])  # many ties
    positions = torch.randint(0, 9, (count, units, 2), generator=torch.Generator().manual_seed(0))
    order = list(range(count))
    rng.shuffle(order)  # batches in any order, files in any order within them
    state = _TopK.empty(units, k)
    start = 0
    while start < count:
        step = rng.randrange(1, 9)
        chosen = torch.tensor(order[start:start + step])
        state = state.merged(values[chosen], chosen, positions[chosen], len(chosen))
        start += step
    assert state.values.shape == state.files.shape == (units, k)
    assert state.positions.shape == (units, k, 2) and state.processed == count
    for u in range(units):
        best = sorted(range(count), key=lambda i: (-values[i, u].item(), i))[:k]
        assert state.files[u].tolist() == best
        assert state.values[u].tolist() == [values[i, u].item() for i in best]
        assert state.positions[u].tolist() == [positions[i, u].tolist() for i in best]


def test_fewer_files_than_top_lists_what_there_is(folder, tmp_path):
    small = tmp_path / "two"
    for name in ("a/red_strong.png", "blue_weak.png"):
        (small / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / name, small / name)
    run(colour_net(), small, tmp_path / "out", top=5)
    data = load_examples(tmp_path / "out", "0")
    assert [e["source"] for e in data["units"]["0"]] == ["a/red_strong.png", "blue_weak.png"]
    # a unit whose best peak is below 0 still lists its images (green sees grey: -0.5)
    green = data["units"]["1"]
    assert sorted(e["source"] for e in green) == ["a/red_strong.png", "blue_weak.png"]
    assert [e["activation"] for e in green] == pytest.approx([-0.5, -0.5], abs=0.02)
    assert green[0]["activation"] >= green[1]["activation"]


# --- receptive fields ----------------------------------------------------------------------

def seeded(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.uniform_(p, -1, 1)
    return module


def test_two_3x3_convolutions_see_a_5x5_box_centred_on_the_position():
    net = seeded(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                               nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()))
    rf = receptive_field(net, "3", 16)
    assert rf.map_size == (16, 16) and rf.stride == (1.0, 1.0)
    assert rf.box(8, 6) == (6, 4, 11, 9)
    for y in range(16):
        for x in range(16):  # clipped at the borders (zero padding)
            assert rf.box(y, x) == (max(y - 2, 0), max(x - 2, 0), min(y + 3, 16),
                                    min(x + 3, 16))


def test_a_stride_2_convolution_maps_with_stride_2():
    rf = receptive_field(seeded(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2))), "0", 17)
    assert rf.map_size == (8, 8) and rf.stride == (2.0, 2.0)
    assert all(rf.box(y, x) == (2 * y, 2 * x, 2 * y + 3, 2 * x + 3)
               for y in range(8) for x in range(8))


def test_pooling_stacks_and_layers_without_space():
    net = seeded(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                               nn.Linear(8 * 8 * 8, 5)))
    rf = receptive_field(net, "3", 16)
    # conv 3 (pad 1) -> pool 2 -> conv 3 (pad 1): 8 pixels wide, stride 2, offset -3
    assert (rf.stride, rf.offset, rf.extent) == ((2.0, 2.0), (-3.0, -3.0), (8.0, 8.0))
    assert all(rf.box(y, x) == (max(2 * y - 3, 0), max(2 * x - 3, 0), min(2 * y + 5, 16),
                                min(2 * x + 5, 16)) for y in range(8) for x in range(8))
    whole = receptive_field(net, "5", 16)
    assert whole.map_size is None and whole.box(0, 0) == (0, 0, 16, 16)


@pytest.mark.parametrize("call, error, name", [
    (lambda: ReceptiveField((16, 16), None).box(1, 0), IndexError, "position"),  # no space
    (lambda: ReceptiveField((16, 16), (8, 8), (2.0, 2.0), (-3.0, -3.0), (8.0, 8.0)).box(8, 0),
     IndexError, "position"),
    (lambda: receptive_field(nn.Sequential(nn.Conv2d(3, 4, 3)), "0", 0), ValueError, "size"),
    (lambda: receptive_field(nn.Sequential(nn.Conv2d(3, 4, 3)), "0", 9.5), TypeError, "size"),
])
def test_receptive_fields_reject_bad_positions_and_sizes(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_crops_have_their_boxes_size_also_clipped_at_the_borders(folder, tmp_path):
    net = seeded(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                               nn.Conv2d(4, 4, 3, padding=1)))
    run(net, folder, tmp_path, top=4)
    data = load_examples(tmp_path, "0")
    rf = receptive_field(net, "0", SIZE)
    entries = [e for found in data["units"].values() for e in found]
    assert len(entries) == 16
    for e in entries:
        top, left, bottom, right = e["box"]
        assert tuple(e["box"]) == rf.box(*e["position"])
        assert crop_pixels(tmp_path, e).shape == (bottom - top, right - left, 3)
        whole = load_square(folder / e["source"], SIZE)
        assert np.array_equal(crop_pixels(tmp_path, e), whole[top:bottom, left:right])
    assert any(e["box"][2] - e["box"][0] < 5 or e["box"][3] - e["box"][1] < 5 for e in entries)


# --- series kinds --------------------------------------------------------------------------

def comparable(data: dict) -> dict:
    return {unit: [{k: v for k, v in e.items() if k != "image"} for e in found]
            for unit, found in data["units"].items()}


def test_one_hot_directions_give_the_channels_examples_and_neurons_their_centre(folder,
                                                                                tmp_path):
    net = colour_net()
    run(net, folder, tmp_path)
    run(net, folder, tmp_path, Series("0", "direction", torch.eye(3), source="onehot.pt"))
    run(net, folder, tmp_path, Series("0", "direction", torch.eye(3)[[2, 0]], source="two.pt"),
        units=[0])
    channels = comparable(load_examples(tmp_path, "0"))
    directions = load_examples(tmp_path, Series("0", "direction", torch.eye(3),
                                                source="onehot.pt"))
    assert directions["kind"] == "direction"
    assert directions["units"]["0"][0]["image"] == "examples/0--directions-onehot/crops/" \
                                                   "00000-0.png"
    assert comparable(directions) == channels
    subset = load_examples(tmp_path, Series("0", "direction", torch.eye(3)[[2, 0]],
                                            source="two.pt"))
    assert comparable(subset) == {"0": channels["2"]}

    run(net, folder, tmp_path, Series("0", "neuron"), top=1)
    neuron = load_examples(tmp_path, Series("0", "neuron"))["units"]["0"]
    centre = (SIZE - SIDE + 1) // 2
    assert [(e["source"], e["position"], e["box"]) for e in neuron] == \
        [("red_fourth.png", [centre, centre], [centre, centre, centre + SIDE, centre + SIDE])]
    assert neuron[0]["activation"] == pytest.approx(expected_peak(0.45), abs=0.03)


# --- bounded memory ------------------------------------------------------------------------

def live_tensor_bytes() -> int:
    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if not issubclass(type(obj), torch.Tensor) or obj.layout != torch.strided \
                    or isinstance(obj, FakeTensor):  # torch.compile leftovers: no storage
                continue
            storage = obj.untyped_storage()
            pointer = storage.data_ptr()
        except (ReferenceError, RuntimeError):
            continue
        if pointer not in seen:
            seen.add(pointer)
            total += storage.nbytes()
    return total


def test_memory_stays_bounded_while_streaming(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "few").mkdir()
    for i in range(400):
        save(noise(rng, 16), tmp_path / "many" / f"{i:03d}.png")
        if i < 100:
            shutil.copyfile(tmp_path / "many" / f"{i:03d}.png", tmp_path / "few" / f"{i:03d}.png")
    net = seeded(nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU()))  # a per-image leak x 64
    kwargs = {"top": 3, "batch_size": 4, "progress": False, "checkpoint_every": 5, "size": 16}
    find_examples(net, tmp_path / "few", tmp_path / "warm", "0", **kwargs)  # imports, caches

    peaks = {}
    for name in ("few", "many"):
        tracemalloc.start()
        find_examples(net, tmp_path / name, tmp_path / f"traced-{name}", "0", **kwargs)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # the file list grows with the folder (a short string a file), nothing else does: keeping
    # each image's 64 peaks and positions would more than double the peak
    assert peaks["many"] < 1.25 * peaks["few"], peaks

    tensors, shapes, calls = {}, [], []

    def measure(module, inputs, output):
        if inputs[0].shape[0] != 4:  # not a scan batch (the shape probe, receptive field)
            return
        calls.append(1)
        if len(calls) % 5 == 0:  # a leak only grows: every 5th batch is enough to see it
            tensors[name] = max(tensors.get(name, 0), live_tensor_bytes() - baseline)
            progress = tmp_path / f"counted-{name}" / "examples" / "0" / "progress.pt"
            if progress.is_file():
                state = torch.load(progress, weights_only=True)
                shapes.append((tuple(state["values"].shape), tuple(state["files"].shape),
                               tuple(state["positions"].shape)))

    handle = net[0].register_forward_hook(measure)
    try:
        for name in ("few", "many"):
            gc.collect()
            baseline = live_tensor_bytes()
            find_examples(net, tmp_path / name, tmp_path / f"counted-{name}", "0", **kwargs)
    finally:
        handle.remove()
    # 300 more images are 300 * 3 * 16 * 16 bytes of pixels and 300 * 64 * 14 * 14 * 4 bytes
    # of activations; the live tensors during the scan must not grow with them
    assert tensors["many"] < tensors["few"] + 16_000, tensors
    assert len(shapes) > 10 and set(shapes) == {((64, 3), (64, 3), (64, 3, 2))}


# --- unreadable files ----------------------------------------------------------------------

def test_corrupt_files_are_skipped_counted_and_change_nothing_else(folder, tmp_path):
    clean = tmp_path / "clean"
    shutil.copytree(folder, clean)
    dirty = tmp_path / "dirty"
    shutil.copytree(folder, dirty)
    jpeg = (folder / "c/red_third.JPG").read_bytes()
    (dirty / "bad").mkdir()
    (dirty / "bad/truncated.jpg").write_bytes(jpeg[:int(len(jpeg) * 0.6)])
    (dirty / "bad/random.png").write_bytes(np.random.default_rng(2).bytes(300))
    (dirty / "empty.jpg").write_bytes(b"")
    (dirty / "noise/text.webp").write_text("this is text, not a WebP image\n")
    bad = ["bad/random.png", "bad/truncated.jpg", "empty.jpg", "noise/text.webp"]

    net = colour_net()
    reference = run(net, clean, tmp_path / "clean-out")
    summary = run(net, dirty, tmp_path / "dirty-out")
    assert summary.skipped == bad
    assert (summary.files, summary.scanned) == (reference.files + 4, reference.files)
    assert "truncated" in summary.reasons["bad/truncated.jpg"]
    assert "4 skipped" in str(summary) and all(name in str(summary) for name in bad)
    data = load_examples(tmp_path / "dirty-out", "0")
    assert (data["files"], data["scanned"], data["skipped"]) == (summary.files,
                                                                 reference.files, bad)
    clean_data = load_examples(tmp_path / "clean-out", "0")
    assert data["units"] == clean_data["units"]
    for entry in (e for found in data["units"].values() for e in found):
        assert (tmp_path / "dirty-out" / entry["image"]).read_bytes() == \
            (tmp_path / "clean-out" / entry["image"]).read_bytes()

    # two worker processes read the files: the same result, the same skipped list
    parallel = run(net, dirty, tmp_path / "workers-out", workers=2, batch_size=5)
    assert parallel.skipped == bad
    assert load_examples(tmp_path / "workers-out", "0")["units"] == clean_data["units"]


# --- resume and refusals -------------------------------------------------------------------

def interrupt_on_batch(net: nn.Module, number: int):
    calls = []

    def hook(module, inputs, output):
        if inputs[0].shape[0] == 3:  # scan batches only (batch_size=3)
            calls.append(1)
            if len(calls) == number:
                raise KeyboardInterrupt
    return net[0].register_forward_hook(hook)


def test_ctrl_c_then_resume_gives_the_uninterrupted_result(folder, tmp_path):
    net = colour_net()
    run(net, folder, tmp_path / "reference")
    out = tmp_path / "resumed"
    handle = interrupt_on_batch(net, 3)
    try:
        stopped = run(net, folder, out, checkpoint_every=100, batch_size=3)
    finally:
        handle.remove()
    progress = out / "examples" / "0" / "progress.pt"
    assert stopped.interrupted and stopped.processed == 6
    assert "run the same command again to resume" in str(stopped)
    assert torch.load(progress, weights_only=True)["processed"] == 6
    assert not (out / "examples" / "0" / "examples.json").exists()

    # other settings are refused while the scan is unfinished
    with pytest.raises(AtlasError, match=r"top: 3 in progress.pt, 5 now.*delete"):
        run(net, folder, out, top=5)
    other = colour_net()
    with torch.no_grad():
        other[0].bias.fill_(0.5)
    with pytest.raises(AtlasError, match="weights_sha256"):
        run(other, folder, out)
    with pytest.raises(AtlasError, match=r"unfinished scan for 3 units \(0, 1, 2\), not the 1"):
        run(net, folder, out, units=[1])

    resumed = run(net, folder, out)
    assert (resumed.resumed, resumed.processed, resumed.interrupted) == (6, 24, False)
    assert not progress.exists()
    assert load_examples(out, "0") == load_examples(tmp_path / "reference", "0")
    for path in (tmp_path / "reference").rglob("*.png"):
        assert (out / path.relative_to(tmp_path / "reference")).read_bytes() == \
            path.read_bytes()

    # finished: refused with other settings, nothing to do with the same ones
    with pytest.raises(AtlasError, match=r"top: 3 in examples.json, 4 now"):
        run(net, folder, out, top=4)
    again = run(net, folder, out)
    assert again.already_complete and again.processed == 0
    assert "already complete" in str(again)


def test_an_error_mid_scan_keeps_the_finished_batches(folder, tmp_path):
    net = colour_net()
    calls = []

    def fail(module, inputs, output):
        if inputs[0].shape[0] == 3:
            calls.append(1)
            if len(calls) == 4:
                raise RuntimeError("DataLoader worker (pid 1234) is killed by signal")

    handle = net[0].register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="killed by signal"):
            run(net, folder, tmp_path / "out", batch_size=3, checkpoint_every=100)
    finally:
        handle.remove()
    progress = tmp_path / "out" / "examples" / "0" / "progress.pt"
    assert torch.load(progress, weights_only=True)["processed"] == 9
    assert run(net, folder, tmp_path / "out").resumed == 9
    run(net, folder, tmp_path / "reference")
    assert load_examples(tmp_path / "out", "0") == load_examples(tmp_path / "reference", "0")


def test_more_units_are_added_to_finished_examples(folder, tmp_path):
    net = colour_net()
    run(net, folder, tmp_path / "all")
    first = run(net, folder, tmp_path / "added", units=[1])
    assert list(load_examples(tmp_path / "added", "0")["units"]) == ["1"] and first.units == 1
    more = run(net, folder, tmp_path / "added", units="0:3")
    assert more.units == 3 and not more.already_complete
    assert load_examples(tmp_path / "added", "0") == load_examples(tmp_path / "all", "0")


def test_examples_of_other_weights_than_the_atlas_are_refused(folder, tmp_path):
    (tmp_path / "atlas.json").write_text(json.dumps({"settings": {"weights_sha256": "f" * 64}}))
    with pytest.raises(AtlasError, match="f" * 64 + r".*weights are [0-9a-f]{64}"):
        run(colour_net(), folder, tmp_path)


def test_a_full_disk_stops_clearly_and_the_rerun_only_writes_the_crops(folder, tmp_path,
                                                                       monkeypatch):
    net = colour_net()
    real = examples_module.save_png
    calls = []

    def fill_up(pixels, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(pixels, path)

    monkeypatch.setattr(examples_module, "save_png", fill_up)
    with pytest.raises(AtlasWriteError, match="No space left on device.*run the same command"):
        run(net, folder, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.partial"))
    assert not (tmp_path / "out" / "examples" / "0" / "examples.json").exists()
    monkeypatch.setattr(examples_module, "save_png", real)
    summary = run(net, folder, tmp_path / "out")
    assert (summary.resumed, summary.processed) == (summary.files, 0)
    run(net, folder, tmp_path / "reference")
    assert load_examples(tmp_path / "out", "0") == load_examples(tmp_path / "reference", "0")


def test_an_unusable_output_directory_is_a_clear_error(folder, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(AtlasWriteError, match="cannot create the examples directory"):
        run(colour_net(), folder, blocker / "out")


# --- bad requests --------------------------------------------------------------------------

def _nan_rows() -> torch.Tensor:
    rows = torch.ones(4, 3)
    rows[2, 0] = math.nan
    return rows


FLAT = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 4))


@pytest.mark.parametrize("call, error, name", [
    (lambda folder, out: run(colour_net(), out.parent / "empty", out), ValueError, "images"),
    (lambda folder, out: run(colour_net(), out.parent / "missing", out), FileNotFoundError,
     "images"),
    (lambda folder, out: run(colour_net(), folder, out, units=[3]), IndexError, "unit"),
    (lambda folder, out: run(colour_net(), folder, out, units=[]), ValueError, "units"),
    (lambda folder, out: run(colour_net(), folder, out, top=0), ValueError, "top"),
    (lambda folder, out: run(colour_net(), folder, out, batch_size=0), ValueError, "batch_size"),
    (lambda folder, out: run(colour_net(), folder, out, workers=-1), ValueError, "workers"),
    (lambda folder, out: run(colour_net(), folder, out, size=2.5), TypeError, "size"),
    (lambda folder, out: run(colour_net(), folder, out, checkpoint_every=0), ValueError,
     "checkpoint_every"),
    (lambda folder, out: run(colour_net(), folder, out, Series("0", "direction", torch.ones(4, 2))),
     ValueError, "directions"),
    (lambda folder, out: run(colour_net(), folder, out, Series("0", "direction", _nan_rows())),
     ValueError, "series"),
    (lambda folder, out: run(colour_net(), folder, out, 0), TypeError, "series"),
    (lambda folder, out: run(colour_net(), folder, out, "conv"), ValueError, "layer"),
    (lambda folder, out: run(FLAT, folder, out, Series("2", "neuron")), ValueError, "neuron"),
])
def test_find_examples_rejects_bad_requests(folder, tmp_path, call, error, name):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "photo.gif").write_bytes(b"GIF89a")  # not an image we read
    with pytest.raises(error, match=name):
        call(folder, tmp_path / "out")
    assert not (tmp_path / "out" / "examples").exists()


def test_bad_requests_are_clear_errors(folder, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images in .*\.jpg, \.jpeg, \.png, \.webp"):
        run(colour_net(), tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match=r"direction row\(s\) 2 hold NaN .* --units"):
        run(colour_net(), folder, tmp_path / "out", Series("0", "direction", _nan_rows()))
    # leaving the broken row out works
    run(colour_net(), folder, tmp_path / "out", Series("0", "direction", _nan_rows()),
        units=[0, 1, 3])
    broken = colour_net()
    with torch.no_grad():
        broken[0].bias[1] = math.nan
    with pytest.raises(FloatingPointError, match="NaN activations at '0' for a/b/red_second"):
        run(broken, folder, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="lucent-core examples --model MODEL --layer 0"):
        load_examples(tmp_path / "out", "0")


def test_layers_without_space_use_the_whole_image(folder, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 4))
    run(net, folder, tmp_path, "2", top=2)
    found = load_examples(tmp_path, "2")["units"]
    assert len(found) == 4
    for entries in found.values():
        assert [(e["position"], e["box"]) for e in entries] == [([0, 0], [0, 0, SIZE, SIZE])] * 2
        assert all(crop_pixels(tmp_path, e).shape == (SIZE, SIZE, 3) for e in entries)
    assert not math.isnan(found["0"][0]["activation"])


def test_linked_folders_are_followed_once_and_links_to_nothing_are_skipped(folder, tmp_path):
    from lucent_core.image_folder import image_files
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "elsewhere").symlink_to(folder, target_is_directory=True)
    (linked / "again").symlink_to(folder, target_is_directory=True)   # the same folder twice
    (linked / "loop").symlink_to(linked, target_is_directory=True)    # a cycle
    (linked / "gone.jpg").symlink_to(tmp_path / "no-such-file.jpg")
    files = image_files(linked)
    originals = image_files(folder)
    assert files == sorted(["gone.jpg"] + [f"again/{f}" for f in originals])
    summary = run(colour_net(), linked, tmp_path / "out")
    assert summary.skipped == ["gone.jpg"] and summary.scanned == len(originals)


def test_an_output_atlas_inside_the_images_folder_is_not_scanned(folder, tmp_path):
    import shutil
    images = tmp_path / "images"
    shutil.copytree(folder, images)
    from lucent_core.atlas import Series
    first = run(colour_net(), images, images / "atlas")
    assert list((images / "atlas").rglob("*.png"))            # its crops are in the folder now
    again = run(colour_net(), images, images / "atlas", series=Series("0", "neuron"))
    assert again.files == first.files and again.scanned == first.scanned
