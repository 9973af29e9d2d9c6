"""How much of the package's code checks arguments: the share CONTRIBUTING.md keeps under 10%.

Code lines: the non-blank lines of ``lucent_core/**/*.py`` that are neither comments nor
docstrings. Check lines: every line of an ``if`` statement whose body only raises
``TypeError``, ``ValueError`` or ``IndexError`` (the errors of bad arguments; its test and its
``raise``), of such a ``raise`` elsewhere, of a call to a helper of ``lucent_core.validate``
(also as ``validate.name(...)``), and the whole of ``validate.py``. Errors of the machine or
of the run (``FloatingPointError``, ``RuntimeError``, ``OSError``s, ``AtlasError``,
``WeightsError``) are not argument checks and are not counted.

    python tools/count_checks.py            # the share, and the ten files with most checks
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lucent_core"
ARGUMENT_ERRORS = {"TypeError", "ValueError", "IndexError"}


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def _span(node: ast.AST) -> set[int]:
    return set(range(node.lineno, node.end_lineno + 1))


def _raises_argument_error(node: ast.Raise) -> bool:
    exc = node.exc
    target = exc.func if isinstance(exc, ast.Call) else exc
    return isinstance(target, ast.Name) and target.id in ARGUMENT_ERRORS


def _helper_name(func: ast.AST) -> str | None:
    """``name`` for a call of ``name(...)`` or ``validate.name(...)``."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
            and func.value.id == "validate":
        return func.attr
    return None


def _validate_helpers() -> set[str]:
    tree = ast.parse((PACKAGE / "validate.py").read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def count(path: Path, helpers: set[str]) -> tuple[int, int]:
    """``(code lines, check lines)`` of one file."""
    text = path.read_text()
    tree = ast.parse(text)
    skip = _docstring_lines(tree)
    code = {i for i, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.strip().startswith("#") and i not in skip}
    if path.name == "validate.py":
        return len(code), len(code)
    checks: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and node.body and not node.orelse and all(
                isinstance(s, ast.Raise) and s.exc is not None and _raises_argument_error(s)
                for s in node.body):
            checks |= _span(node)
        elif isinstance(node, ast.Raise) and node.exc is not None and _raises_argument_error(node):
            checks |= _span(node)
        elif isinstance(node, ast.Call) and _helper_name(node.func) in helpers:
            checks |= _span(node)
    return len(code), len(checks & code)


def main() -> int:
    helpers = _validate_helpers()
    per_file = {path: count(path, helpers) for path in sorted(PACKAGE.rglob("*.py"))}
    code = sum(c for c, _ in per_file.values())
    checks = sum(k for _, k in per_file.values())
    print(f"{checks} of {code} code lines check arguments: {100 * checks / code:.2f}%")
    for path, (c, k) in sorted(per_file.items(), key=lambda item: -item[1][1])[:10]:
        print(f"  {k:4d} of {c:4d}  {path.relative_to(PACKAGE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
