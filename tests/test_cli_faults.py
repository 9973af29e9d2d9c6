"""Faults of the command line that argparse alone gets wrong: unknown flags named (with close
matches) before anything else, no prefix matching of flags, negative channels as Python reads
them, a directory given as --weights, and a range of units past a layer's end."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from lucent_core import cli
from lucent_core.cli import build_parser, main
from lucent_core.units import parse_units

SMALL = ["--steps", "1", "--size", "32", "--quiet"]
RANDOM_RENDER = ["render", "--model", "vgg16_hed", "--random-weights", "--layer", "block1_conv1",
                 *SMALL]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    import urllib.error

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("test: no network")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def parse_error(capsys, argv: list[str]) -> str:
    """argparse's one-line complaint (exit status 2) for ``argv``."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


# --- unknown flags are named first, with close matches ---------------------------------------

@pytest.mark.parametrize("argv, unknown, suggested", [
    (["render", "--layer", "x", "--chanel", "3"], "--chanel", "--channel"),  # --channel missing
    ([*RANDOM_RENDER, "--channel", "0", "--quite"], "--quite", "--quiet"),
    ([*RANDOM_RENDER, "--channel", "0", "--step", "4"], "--step", "--steps"),  # no prefixes
    (["atlas", "--layer", "x", "--out", "o", "--unit=0:4"], "--unit", "--units"),
    (["layers", "--modle", "inceptionv1"], "--modle", "--model"),
    (["examples", "--layer", "x", "--image", "d", "--out", "o"], "--image", "--images"),
])
def test_an_unknown_flag_is_named_first_with_its_close_matches(capsys, argv, unknown, suggested):
    message = parse_error(capsys, argv)
    assert re.search(rf"unrecognized arguments?: .*{unknown}\b", message), message
    assert f"did you mean {suggested}" in message and "required" not in message


def test_an_unknown_flag_without_a_close_match_is_named_alone(capsys):
    message = parse_error(capsys, ["render", "--layer", "x", "--zzzzzz"])
    assert "--zzzzzz" in message and "did you mean" not in message


def test_negative_numbers_and_values_after_flags_are_not_taken_for_flags():
    args = build_parser().parse_args(["render", "--layer", "x", "--channel", "-1"])
    assert args.channel == -1
    args = build_parser().parse_args(["atlas", "--layer", "x", "--out", "o", "--units=-8:"])
    assert args.units == "-8:"


def every_parser() -> list[argparse.ArgumentParser]:
    top = build_parser()
    subparsers = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return [top, *subparsers[0].choices.values()]


def test_no_parser_takes_a_prefix_of_a_flag_for_the_flag():
    assert all(parser.allow_abbrev is False for parser in every_parser())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["render", "--layer", "x", "--channel", "1", "--step", "1"])


# --- negative channels count from the end, as in Python ---------------------------------------

def test_a_negative_channel_is_the_last_channels(capsys, tmp_path, monkeypatch):
    rendered = []
    original = cli.render_vis

    def wrapper(model, objective, *args, **kwargs):
        rendered.append(objective)
        return original(model, objective, *args, **kwargs)
    monkeypatch.setattr(cli, "render_vis", wrapper)
    rc = main([*RANDOM_RENDER, "--channel", "-1", "-o", str(tmp_path / "last.png")])
    assert rc == 0 and (tmp_path / "last.png").is_file()
    acts = {"block1_conv1": torch.arange(64.0).reshape(1, 64, 1, 1)}
    assert rendered[0](acts).item() == 63.0  # block1_conv1 has 64 channels: -1 is 63


@pytest.mark.parametrize("argv, name", [
    ([*RANDOM_RENDER, "--channel", "-65"], "channel"),
    ([*RANDOM_RENDER, "--channel", "64"], "channel"),
])
def test_a_channel_past_either_end_is_refused(capsys, tmp_path, argv, name):
    rc = main([*argv, "-o", str(tmp_path / "never.png")])
    err = capsys.readouterr().err
    assert rc == 2 and name in err and "64" in err
    assert not (tmp_path / "never.png").exists()


# --- a directory given as --weights -------------------------------------------------------------

def test_a_directory_as_weights_says_a_file_is_needed(capsys, tmp_path):
    rc = main(["layers", "--model", "inceptionv1", "--weights", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "is a directory" in err and "file" in err and "does not exist" not in err


# --- a range of units past the layer's end suggests the range that fits -------------------------

@pytest.mark.parametrize("text, count, suggested", [
    ("510:520", 512, "510:512"),
    ("0:600:2", 512, "0:512:2"),
    ("-600:4", 512, "-512:4"),
])
def test_a_range_past_the_end_suggests_the_range_that_fits(text, count, suggested):
    with pytest.raises(IndexError, match="units") as info:
        parse_units(text, count)
    assert f"use {suggested}" in str(info.value)
