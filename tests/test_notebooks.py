"""The chapter notebooks: committed without outputs, and each runs top to bottom.

Notebooks run in quick mode (MINIMM_QUICK=1 shrinks data and epochs) with the
non-interactive matplotlib backend, from inside ``chapters/`` as working directory.
"""
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb")) if CHAPTERS.is_dir() else []
NOTEBOOK_IDS = [p.name for p in NOTEBOOKS]

KERNEL_ENV = {"MINIMM_QUICK": "1", "MPLBACKEND": "Agg"}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def test_chapters_exist():
    """The parametrisation below must never be silently empty."""
    if not CHAPTERS.is_dir():
        pytest.fail(f"chapters folder missing: {CHAPTERS}")
    if not NOTEBOOKS:
        pytest.fail(f"no notebooks found in {CHAPTERS} (expected chapters/*.ipynb)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_notebook_outputs_stripped(path):
    """Committed notebooks carry no outputs or execution counts (run tools/strip_notebooks.py)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs") != []:
            problems.append(f"cell {i}: has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i}: execution_count = {cell.get('execution_count')!r}")
    assert not problems, (
        f"{path.name} is not stripped ({'; '.join(problems)}); "
        f"run: python tools/strip_notebooks.py"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_notebook_runs(path):
    """Execute the notebook top to bottom in quick mode; a failing cell fails the test."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(CHAPTERS)}},
    )

    saved = {k: os.environ.get(k) for k in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)  # the kernel process inherits this environment
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = ANSI.sub("", str(exc))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if error is not None:
        pytest.fail(f"{path.name} failed while executing:\n{error}", pytrace=False)
