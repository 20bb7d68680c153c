"""Every notebook in notebooks/ runs top to bottom in a fresh kernel of this environment.

The cells assert what they show, so a behaviour change fails here. Each notebook starts its own
local Ray inside the kernel and stops it in its last cell; if a cell fails, a cleanup cell still
stops it, and the kernel must be left without child processes either way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import psutil
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

# Each notebook starts its own Ray, after the shared graph has stopped.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("own_ray")]
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CLEANUP = """\
if "stack" in globals():
    stack.close()
import ray
ray.shutdown()
"""


@pytest.fixture
def python3_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_models: Path
) -> Iterator[None]:
    """Make ``python3`` mean this interpreter, whatever kernels the user has installed; the
    kernel finds the session's tiny models in ``SOUL_MODELS_DIR`` instead of building them."""
    write_kernel_spec(tmp_path / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("SOUL_MODELS_DIR", str(tiny_models))
    yield


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, python3_kernel: None) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,  # per cell
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},  # the kernel's cwd: config/... resolves
    )
    with client.setup_kernel():
        kernel = psutil.Process(client.km.provisioner.pid)
        try:
            for index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, index)  # raises CellExecutionError on a failing cell
        finally:
            # Best effort after a failure (the failing cell's error is what matters); after a
            # clean run the notebook has stopped everything already.
            notebook.cells.append(nbformat.v4.new_code_cell(CLEANUP))
            with contextlib.suppress(Exception):
                client.execute_cell(notebook.cells[-1], len(notebook.cells) - 1)
            leftovers = _descendants_after(kernel, timeout_s=30)
        assert not leftovers, f"the kernel left processes running: {leftovers}"


def _descendants_after(process: psutil.Process, timeout_s: float) -> list[str]:
    """The process's descendants still running after up to ``timeout_s`` (Ray's exit)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            children = process.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        alive = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{child.pid} {' '.join(child.cmdline())[:120]}")
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)
