"""Tests for lucent_core.atlas.gallery: files and links of a fake atlas built here (tiny PNGs and
a hand-written manifest, no renderer), escaping, paging, dataset examples, errors, a 4096-unit
series, and a real headless Chromium that opens the pages from disk, follows links, checks that
every image displays and takes screenshots."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from lucent_core.atlas.gallery import write_gallery

SETTINGS = {"model": "inceptionv1", "weights_sha256": "ab12cd34ef56" + "0" * 52, "steps": 512,
            "size": 128, "param": "fourier", "decorrelate": True, "transforms": "standard",
            "lr": 0.05, "redirected_relu": True, "seed": 0}
WEIRD_NAME = "mixed<4a> & \"quoted\" 'single' é 🙂"
WEIRD_DIR = "mixed 4a #1 ?x=%20 é 🙂"          # space, '#', '?', '%' and unicode in a path
WEIRD_OBJECTIVE = "channel('<script>alert(1)</script>', 0) & \"more\""
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


# --- a fake atlas -------------------------------------------------------------------------

def _png(path: Path, colour: tuple[int, int, int], size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[:] = colour
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255 - np.array(colour)
    Image.fromarray(pixels).save(path)


def _record(directory: str, unit: int, **extra) -> dict:
    record = {
        "unit": unit, "image": f"{directory}/units/{unit:05d}.png", "layer": "mixed4a",
        "kind": "channel", "objective": f"channel('mixed4a', {unit})",
        "python": f"lucent_core.objectives.channel('mixed4a', {unit})",
        "command": f"lucent-core atlas --model inceptionv1 --layer mixed4a --units {unit} "
                   "--steps 512 --size 128 --out atlas",
        "activation": 12.5 + unit, "history": {"steps": [1, 64, 128, 512],
                                              "values": [0.1, 3.0, 8.2, 12.1 + unit]},
        "seed": 123456789 + unit, "model": "inceptionv1", "steps": 512, "size": 128,
        "finished_at": "2026-11-22T08:00:00Z"}
    record.update(extra)
    return record


def _series(root: Path, name: str, directory: str, units: list[int], kind: str = "channel",
            source: str | None = None, **extra_per_unit) -> dict:
    records = [_record(directory, u, kind=kind, **extra_per_unit) for u in units]
    for i, record in enumerate(records):
        _png(root / record["image"], ((40 * i) % 256, 90, 200 - (30 * i) % 200))
    grid = None
    if records:
        grid = f"{directory}/grid.png"
        _png(root / grid, (10, 200, 10), size=24)
    return {"name": name, "dir": directory, "layer": "mixed4a", "kind": kind, "source": source,
            "grid": grid, "count": len(records), "units": records}


def _manifest(*series: dict) -> dict:
    return {"format": "lucent-core-atlas/1", "settings": dict(SETTINGS), "series": list(series)}


@pytest.fixture
def atlas(tmp_path):
    """A three-series atlas with dataset examples on one unit; returns (root, manifest)."""
    root = tmp_path / "atlas"
    channel = _series(root, "mixed4a", "mixed4a", [0, 1, 2, 3])
    neuron = _series(root, "mixed4a--neuron", "mixed4a--neuron", [5, 7])
    empty = _series(root, "mixed4a--directions-sae", "mixed4a--directions-sae", [],
                    kind="direction", source="sae.pt")
    examples = []
    for i in range(3):
        path = f"examples/mixed4a-1-{i}.png"
        _png(root / path, (200, 30 * i, 60))
        examples.append({"image": path, "activation": 9.0 - i, "source": f"imagenet/val/{i}.JPEG"})
    channel["units"][1]["examples"] = examples
    manifest = _manifest(channel, neuron, empty)
    return root, manifest


# --- parsing helpers ----------------------------------------------------------------------

class _Page(HTMLParser):
    """Collects links, titles, text and a check that every non-void element is closed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, dict]] = []   # (tag, attrs) of every element with href/src
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.title = ""
        self.text: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "href" in attrs or "src" in attrs:
            self.links.append((tag, attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack[-2:] == ["head", "title"]:
            self.title += data
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _targets(page_path: Path, page: _Page) -> list[Path]:
    """Every linked file of a page as a local path (after percent-decoding)."""
    targets = []
    for _, attrs in page.links:
        url = attrs.get("href", attrs.get("src"))
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not url.startswith("/"), \
            f"{page_path}: link {url!r} is not relative"
        if parts.path:
            targets.append(page_path.parent / unquote(parts.path))
    return targets


def _check_links(root: Path) -> int:
    """Assert that every href/src of every page exists; return how many links were checked."""
    checked = 0
    for page_path in root.rglob("*.html"):
        for target in _targets(page_path, _parse(page_path)):
            assert target.is_file(), f"{page_path.relative_to(root)} links to missing {target}"
            checked += 1
    return checked


def _rel_links(page: _Page, rel: str) -> list[str]:
    return [a["href"] for tag, a in page.tags if tag == "a" and a.get("rel") == rel]


# --- files, links, structure --------------------------------------------------------------

def test_files_at_expected_paths(atlas):
    root, manifest = atlas
    index = write_gallery(root, manifest)
    assert index == root / "index.html"
    assert (root / "gallery.css").is_file() and (root / "gallery.js").is_file()
    for series in manifest["series"]:
        assert (root / series["dir"] / "index.html").is_file()
        for record in series["units"]:
            assert (root / record["image"]).with_suffix(".html").is_file()
    pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html"))
    assert len(pages) == 1 + 3 + 4 + 2
    assert not list(root.rglob("*.partial")), "temporary files left behind"


def test_every_link_resolves_also_after_moving_the_tree(atlas, tmp_path):
    root, manifest = atlas
    (root / "manifest.json").write_text(json.dumps(manifest))
    write_gallery(root, manifest)
    assert _check_links(root) > 40
    moved = tmp_path / "elsewhere" / "moved atlas"
    moved.parent.mkdir()
    shutil.move(root, moved)
    assert _check_links(moved) > 40
    index = _parse(moved / "index.html")
    assert "manifest.json" in [a.get("href") for _, a in index.links]


def test_pages_are_html5_with_balanced_tags(atlas):
    root, manifest = atlas
    write_gallery(root, manifest)
    for path in root.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>\n"), path
        assert re.search(r'<html lang="en">', text) and '<meta charset="utf-8">' in text, path
        page = _parse(path)
        assert page.errors == [] and page.stack == [], (path, page.errors, page.stack)
        assert page.title.strip() and text.count("<title>") - text.count("<svg") == 1, path
        ids = [a["id"] for _, a in page.tags if "id" in a]
        assert len(ids) == len(set(ids)), f"duplicate ids in {path}"


def test_index_and_series_content(atlas):
    root, manifest = atlas
    write_gallery(root, manifest)
    index = _parse(root / "index.html")
    text = " ".join(index.text)
    assert index.title == "inceptionv1 atlas"
    heading = re.search(r"<h1>.*?</h1>", (root / "index.html").read_text(encoding="utf-8"))[0]
    assert "ab12cd34ef56<" in heading                     # the short weights hash in the title
    for key in SETTINGS:                                   # the settings table, every key
        assert key in text
    hrefs = [a["href"] for tag, a in index.tags if tag == "a"]
    assert "mixed4a/index.html" in hrefs and "mixed4a/grid.png" in hrefs
    assert "mixed4a--neuron/units/00007.html" in hrefs
    assert "4 units" in text and "2 units" in text and "0 units" in text

    series = _parse(root / "mixed4a" / "index.html")
    images = [a for tag, a in series.tags if tag == "img"]
    assert [a["src"] for a in images] == [f"units/{u:05d}.png" for u in range(4)]
    assert all(a.get("loading") == "lazy" for a in images)
    assert "grid.png" in [a["href"] for tag, a in series.tags if tag == "a"]
    assert "../index.html" in _rel_links(series, "up")
    assert "15.5" in series.text                          # unit 3's final activation

    empty = _parse(root / "mixed4a--directions-sae" / "index.html")
    assert "no rendered units" in " ".join(empty.text)
    assert "sae.pt" in " ".join(empty.text)               # the directions' source file
    assert not [a for tag, a in empty.tags if tag == "img"]


def test_unit_page_content(atlas):
    root, manifest = atlas
    write_gallery(root, manifest)
    page = _parse(root / "mixed4a" / "units" / "00002.html")
    text = "".join(page.text)
    record = manifest["series"][0]["units"][2]
    assert [a["src"] for tag, a in page.tags if tag == "img"] == ["00002.png"]
    for key in record:                                     # every key of the record
        assert key in text, key
    assert record["command"] in text and record["python"] in text
    assert '"values": [0.1, 3.0, 8.2, 14.1]' in text       # nested dicts as compact JSON
    polyline = [a for tag, a in page.tags if tag == "polyline"]
    assert len(polyline) == 1 and len(polyline[0]["points"].split()) == 4
    codes = {a["id"] for tag, a in page.tags if tag == "code" and "id" in a}
    buttons = {a["data-target"] for tag, a in page.tags if tag == "button"}
    assert codes == buttons == {"command", "python"}


def test_prev_next_up_on_first_middle_last(atlas):
    root, manifest = atlas
    manifest["series"][0]["units"].reverse()               # order in the manifest is ignored
    write_gallery(root, manifest)
    units = root / "mixed4a" / "units"
    first, middle, last = (_parse(units / f"{u:05d}.html") for u in (0, 1, 3))
    assert _rel_links(first, "prev") == [] and _rel_links(first, "next") == ["00001.html"]
    assert _rel_links(middle, "prev") == ["00000.html"]
    assert _rel_links(middle, "next") == ["00002.html"]
    assert _rel_links(last, "prev") == ["00002.html"] and _rel_links(last, "next") == []
    for page in (first, middle, last):
        assert _rel_links(page, "up") == ["../index.html"]
    assert "../../index.html" in [a["href"] for tag, a in last.tags if tag == "a"]
    single = _parse(root / "mixed4a--neuron" / "units" / "00005.html")
    assert _rel_links(single, "next") == ["00007.html"] and _rel_links(single, "prev") == []


def test_dataset_examples_only_when_present(atlas):
    root, manifest = atlas
    write_gallery(root, manifest)
    units = root / "mixed4a" / "units"
    with_examples = (units / "00001.html").read_text(encoding="utf-8")
    assert "Dataset examples" in with_examples
    page = _parse(units / "00001.html")
    sources = [a["src"] for tag, a in page.tags if tag == "img"]
    assert sources[0] == "00001.png"
    assert sources[1:] == [f"../../examples/mixed4a-1-{i}.png" for i in range(3)]
    assert "imagenet/val/2.JPEG" in page.text
    for u in (0, 2, 3):
        assert "Dataset examples" not in (units / f"{u:05d}.html").read_text(encoding="utf-8")


def test_escapes_user_strings_and_encodes_paths(tmp_path):
    root = tmp_path / "atlas"
    series = _series(root, WEIRD_NAME, WEIRD_DIR, [0, 1], objective=WEIRD_OBJECTIVE,
                     my_extra_key={"nested": ["<b>", "ü"]})
    series["layer"] = WEIRD_NAME
    manifest = _manifest(series)
    manifest["settings"]["model"] = "net<&>é"
    write_gallery(root, manifest)
    assert (root / WEIRD_DIR / "units" / "00001.html").is_file()
    for path in root.rglob("*.html"):
        raw = path.read_text(encoding="utf-8")
        assert "<script>alert" not in raw and "<4a>" not in raw and "net<&>" not in raw, path
        page = _parse(path)
        assert page.errors == [] and page.stack == [], (path, page.errors)
        assert WEIRD_NAME in "".join(page.text), path       # shown, and unescaped once
    unit = _parse(root / WEIRD_DIR / "units" / "00000.html")
    assert unit.title == f"{WEIRD_NAME} unit 0 — net<&>é atlas"   # round-trips exactly
    text = "".join(unit.text)
    assert WEIRD_OBJECTIVE in text and '{"nested": ["<b>", "ü"]}' in text
    index = _parse(root / "index.html")
    assert "mixed%204a%20%231%20%3Fx%3D%2520%20%C3%A9%20%F0%9F%99%82/index.html" in \
        [a.get("href") for _, a in index.links]
    assert _check_links(root) > 10                         # the encoded links resolve on disk


@pytest.mark.parametrize("history, points", [
    ({"steps": [1, 2, 3, 4], "values": [1.0, float("nan"), 3.0, float("inf")]}, 2),
    ([0.5, 1.5, 1.0], 3),                                   # plain values: steps 1, 2, 3
    ({"steps": [7], "values": [2.0]}, 1),
    ({"steps": [1, 2], "values": [4.0, 4.0]}, 2),           # flat: no division by zero
    ("not a history", 0),
    (None, 0),
])
def test_history_sparkline(tmp_path, history, points):
    root = tmp_path / "atlas"
    series = _series(root, "s", "s", [0], history=history)
    write_gallery(root, _manifest(series))
    page = _parse(root / "s" / "units" / "00000.html")
    lines = [a["points"].split() for tag, a in page.tags if tag == "polyline"]
    assert [len(line) for line in lines] == ([points] if points else [])
    for x, y in (map(float, p.split(",")) for line in lines for p in line):
        assert 0 <= x <= 240 and 0 <= y <= 56
    assert "history" in page.text                           # always in the record table


def test_rewrite_updates_pages(atlas):
    root, manifest = atlas
    write_gallery(root, manifest)
    before = _parse(root / "mixed4a" / "units" / "00003.html")
    assert _rel_links(before, "next") == []
    more = _series(root, "mixed4a", "mixed4a", [0, 1, 2, 3, 4])
    manifest["series"][0] = more
    write_gallery(root, manifest)
    after = _parse(root / "mixed4a" / "units" / "00003.html")
    assert _rel_links(after, "next") == ["00004.html"]
    assert not list(root.rglob("*.partial"))


def test_large_series(tmp_path):
    root = tmp_path / "big"
    units_dir = root / "layer" / "units"
    units_dir.mkdir(parents=True)
    _png(units_dir / "00000.png", (1, 2, 3), size=8)
    png = (units_dir / "00000.png").read_bytes()
    records = []
    for unit in range(4096):
        if unit:
            (units_dir / f"{unit:05d}.png").write_bytes(png)
        records.append({"unit": unit, "image": f"layer/units/{unit:05d}.png",
                        "activation": unit / 7, "history": {"steps": [1, 2], "values": [0, 1]}})
    series = {"name": "layer", "dir": "layer", "layer": "layer", "kind": "channel",
              "units": records}
    write_gallery(root, _manifest(series))
    assert len(list(units_dir.glob("*.html"))) == 4096
    page = _parse(root / "layer" / "index.html")
    images = [a for tag, a in page.tags if tag == "img"]
    assert len(images) == 4096 and all(a["loading"] == "lazy" for a in images)
    assert images[-1]["src"] == "units/04095.png"
    last = _parse(units_dir / "04095.html")
    assert _rel_links(last, "prev") == ["04094.html"] and _rel_links(last, "next") == []
    assert len(_parse(root / "index.html").links) < 40   # the overview stays small


@pytest.mark.parametrize("change, error, name", [
    (lambda m: m.update(format="lucent-core-atlas/9"), ValueError, "format"),
    (lambda m: m.update(settings=[1]), ValueError, "settings"),
    (lambda m: m["series"][0]["units"][0].pop("image"), ValueError, "'image'"),
    (lambda m: m["series"][0]["units"][0].update(image="/abs/00000.png"), ValueError, "image"),
    (lambda m: m["series"][0].update(dir="../outside"), ValueError, "dir"),
    (lambda m: m["series"][0].update(dir="index.html"), ValueError, "dir"),
    (lambda m: m["series"][0].pop("dir"), ValueError, "dir"),
    (lambda m: m["series"].append(dict(m["series"][0])), ValueError, "dir"),
    (lambda m: m["series"][0]["units"].append(dict(m["series"][0]["units"][0], unit=9)),
     ValueError, "image"),
    (lambda m: m["series"][0]["units"][0].update(examples="x.png"), ValueError, "examples"),
    (lambda m: m["series"][0].update(connections=[]), ValueError, "connections"),
    (lambda m: m["series"][0].update(connections={"0": {"inputs": 3}}), ValueError,
     "connections"),
    (lambda m: m["series"][0].update(connections={"1": {"outputs": {
        "series": "x", "negative": [{"unit": 1, "weights": "/abs.png"}]}}}), ValueError, "weights"),
    (lambda m: m["series"][0].update(units="x"), ValueError, "units"),
    (lambda m: m.update(series={}), ValueError, "series"),
    (lambda m: m["series"].append(3), ValueError, "series"),
])
def test_bad_manifests_are_clear_errors(atlas, change, error, name):
    root, manifest = atlas
    change(manifest)
    with pytest.raises(error, match=name):
        write_gallery(root, manifest)
    assert not (root / "index.html").exists()


def test_not_a_dict():
    with pytest.raises(TypeError, match="manifest"):
        write_gallery("unused", [])


# --- a real browser ---------------------------------------------------------------------

VIEWPORT = {"width": 1000, "height": 700}


def _chromium() -> str:
    """Path of a Chromium to drive; skip the test without one, but fail under CI."""
    def unavailable(reason: str):
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the browser test (see .ci/run)")
        pytest.skip(reason)

    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("playwright is not installed (pip install 'lucent_core[test]')")
    for candidate in (os.environ.get("LUCENT_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    unavailable("no chromium found (apt-get install chromium, or set LUCENT_CHROMIUM)")


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable)
        try:
            yield chromium
        finally:
            chromium.close()


LOAD_ALL_IMAGES = """async () => {
  const images = Array.from(document.images);
  for (const image of images) image.loading = "eager";   // lazy ones below the fold too
  await Promise.all(images.map(image => image.complete ? null :
      new Promise(done => { image.onload = image.onerror = done; })));
  return images.map(image => [image.getAttribute("src"), image.naturalWidth]);
}"""


def _check_page(page, title: str, failures: list, shot: Path) -> None:
    """The page's title, its stylesheet applied, every image decoded, and a screenshot."""
    assert page.title() == title
    sizes = page.evaluate(LOAD_ALL_IMAGES)
    assert sizes and all(width > 0 for _, width in sizes), sizes
    font = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert "system-ui" in font, "gallery.css was not applied"
    assert failures == [], failures
    page.screenshot(path=str(shot))
    with Image.open(shot) as image:
        assert image.format == "PNG"
        assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_in_headless_chromium(browser, atlas, tmp_path):
    root, manifest = atlas
    weird = _series(root, WEIRD_NAME, WEIRD_DIR, [0, 1])
    manifest["series"].append(weird)
    write_gallery(root, manifest)
    context = browser.new_context(viewport=VIEWPORT,
                                  permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    failures: list[str] = []
    # A missing file fails with ERR_FILE_NOT_FOUND; ERR_ABORTED is a load cut by navigation.
    page.on("requestfailed", lambda request: None if request.failure == "net::ERR_ABORTED"
            else failures.append(f"{request.url}: {request.failure}"))
    page.on("pageerror", lambda error: failures.append(str(error)))
    try:
        page.goto((root / "index.html").as_uri())
        _check_page(page, "inceptionv1 atlas", failures, tmp_path / "index.png")

        page.click("section.series >> nth=0 >> a.series-link")          # index -> series
        page.wait_for_load_state()
        assert page.url == (root / "mixed4a" / "index.html").as_uri()
        _check_page(page, "mixed4a — inceptionv1 atlas", failures, tmp_path / "series.png")

        page.click(".grid figure >> nth=2 >> a")                         # series -> unit 2
        page.wait_for_load_state()
        assert page.url.endswith("/mixed4a/units/00002.html")
        _check_page(page, "mixed4a unit 2 — inceptionv1 atlas", failures, tmp_path / "unit.png")
        natural = page.evaluate("document.querySelector('.rendering img').naturalWidth")
        assert natural == 16
        shown = page.evaluate("document.querySelector('.rendering img').clientWidth")
        assert shown > 16                                                # scaled up by CSS

        page.click('button[data-target="python"]')                       # copy button
        page.wait_for_function("document.querySelector('button[data-target=python]')"
                               ".textContent === 'Copied'")
        assert page.evaluate("navigator.clipboard.readText()") == \
            "lucent_core.objectives.channel('mixed4a', 2)"

        page.click('nav a[rel="next"]')                                  # next
        page.wait_for_load_state()
        assert page.title() == "mixed4a unit 3 — inceptionv1 atlas"
        assert page.locator('nav a[rel="next"]').count() == 0             # the last unit
        page.keyboard.press("ArrowLeft")                                 # arrow keys page
        page.wait_for_url("**/00002.html")
        page.go_back()                                                   # history works
        page.wait_for_url("**/00003.html")
        page.click('nav a[rel="up"]')                                    # back up
        page.wait_for_load_state()
        assert page.title() == "mixed4a — inceptionv1 atlas"

        page.goto((root / "mixed4a" / "units" / "00001.html").as_uri())  # dataset examples
        _check_page(page, "mixed4a unit 1 — inceptionv1 atlas", failures,
                    tmp_path / "examples.png")
        assert len(page.evaluate(LOAD_ALL_IMAGES)) == 4
        assert page.locator("text=Dataset examples").count() == 1

        page.goto((root / "index.html").as_uri())                        # percent-encoded dir
        page.click("section.series >> nth=3 >> a.series-link")
        page.wait_for_load_state()
        assert page.title() == f"{WEIRD_NAME} — inceptionv1 atlas"
        page.click(".grid figure >> nth=1 >> a")
        page.wait_for_load_state()
        _check_page(page, f"{WEIRD_NAME} unit 1 — inceptionv1 atlas", failures,
                    tmp_path / "weird.png")
    finally:
        context.close()
