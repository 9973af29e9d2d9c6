"""The README's examples that must keep working: the "Coming from Lucent" one-liners run as a
doctest (the section's ``>>>`` lines)."""

from __future__ import annotations

import doctest
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> tuple[str, int]:
    """The section's text and the README line number it starts at (counted from 0)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None], text.count("\n", 0, start)


def test_the_lucent_one_liners_run_as_written():
    section, line = _section("Coming from Lucent")
    test = doctest.DocTestParser().get_doctest(section, {}, "README: Coming from Lucent",
                                               str(README), line)
    assert len(test.examples) >= 8  # the section's examples were found
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
