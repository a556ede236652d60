"""The chapters: jupytext pairs, committed without outputs, and each runs top to bottom.

Each chapter is a pair: ``chapters/NN_name.py`` in jupytext's percent format (the text source:
``# %%`` opens a code cell, ``# %% [markdown]`` a markdown cell) and ``chapters/NN_name.ipynb``,
the notebook Jupyter opens. ``chapters/jupytext.toml`` pairs them, so with jupytext installed
saving in Jupyter writes both, and ``jupytext --sync chapters/NN_name.ipynb`` copies the cells
of the newer file into the older one, keeping the notebook's cell ids.

What is checked is what git holds. Inside a git checkout the pair and the stripping tests read
each file from git's index — what the next commit will contain; in a fresh clone, the commit
itself — and read the file on disk only where git does not track it (a chapter not yet added)
or there is no git at all (an unpacked sdist). So a learner who runs a chapter in Jupyter and
saves it, outputs and all, breaks nothing; staging those outputs (``git add``) does, and
``python tools/strip_notebooks.py chapters/NN_name.ipynb`` takes them out again (and nothing
else: a notebook that was only run comes back byte for byte as committed). Nothing needs to be
configured in a clone for this: no git filter, no hook.

Notebooks run in quick mode (MINIMM_QUICK=1 shrinks data and epochs) with the
non-interactive matplotlib backend, from inside ``chapters/`` as working directory; what runs
is the notebook on disk, the one a learner opens.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb")) if CHAPTERS.is_dir() else []
NOTEBOOK_IDS = [p.name for p in NOTEBOOKS]
# every .py in chapters/ is a chapter source, so a .py without its notebook is caught too
CHAPTER_NAMES = sorted({p.stem for p in NOTEBOOKS} | {p.stem for p in CHAPTERS.glob("*.py")})

KERNEL_ENV = {"MINIMM_QUICK": "1", "MPLBACKEND": "Agg"}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def committed_text(path):
    """The text of ``path`` as git's index holds it; the file on disk where git does not
    track it or git is not there."""
    path = Path(path)
    try:
        shown = subprocess.run(["git", "-C", str(path.parent), "show", f":./{path.name}"],
                               capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):  # no git installed
        shown = None
    if shown is not None and shown.returncode == 0:
        return shown.stdout.decode("utf-8")
    return path.read_text(encoding="utf-8")


def unstripped_cells(nb):
    """What a run left in a notebook dict: one line per code cell with outputs or a count."""
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs") != []:
            problems.append(f"cell {i}: has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i}: execution_count = {cell.get('execution_count')!r}")
    return problems


def cells_of(nb):
    """(type, source) of every cell of a notebook dict or nbformat node."""
    return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]


def first_difference(a, b):
    """The first line where two (type, source) cells differ, for a readable failure."""
    if a[0] != b[0]:
        return f"  a {a[0]} cell in the .py, a {b[0]} cell in the .ipynb"
    la, lb = a[1].split("\n"), b[1].split("\n")
    n = next((k for k, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
    line = lambda lines: repr(lines[n]) if n < len(lines) else "(no such line)"
    return f"  line {n + 1}:\n    .py:    {line(la)}\n    .ipynb: {line(lb)}"


def load_strip_tool():
    spec = importlib.util.spec_from_file_location("strip_notebooks",
                                                  ROOT / "tools" / "strip_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_jupytext(args, monkeypatch, tmp_path):
    """The jupytext command line, in process; its trust database goes to ``tmp_path``."""
    from jupytext.cli import jupytext as jupytext_cli

    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    assert jupytext_cli(["--quiet", *args]) == 0, f"jupytext {' '.join(args)} failed"


def committed_chapters_copy(dest):
    """chapters/ as git holds it (pairs and jupytext.toml), written under ``dest``."""
    dest.mkdir()
    for name in CHAPTER_NAMES:
        for ext in (".py", ".ipynb"):
            if (CHAPTERS / (name + ext)).exists():  # a missing one fails test_pair_agrees
                (dest / (name + ext)).write_bytes(committed_text(CHAPTERS / (name + ext)).encode())
    config = CHAPTERS / "jupytext.toml"
    (dest / config.name).write_bytes(committed_text(config).encode())
    return dest


def test_chapters_exist():
    """The parametrisation below must never be silently empty."""
    if not CHAPTERS.is_dir():
        pytest.fail(f"chapters folder missing: {CHAPTERS}")
    if not NOTEBOOKS:
        pytest.fail(f"no notebooks found in {CHAPTERS} (expected chapters/*.ipynb)")
    assert (CHAPTERS / "jupytext.toml").is_file(), "chapters/jupytext.toml (the pairing) is missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_notebook_outputs_stripped(path):
    """Notebooks as git holds them carry no outputs or execution counts."""
    problems = unstripped_cells(json.loads(committed_text(path)))
    assert not problems, (
        f"{path.name} as staged in git is not stripped ({'; '.join(problems)}); run: "
        f"python tools/strip_notebooks.py chapters/{path.name} and git add it again"
    )


@pytest.mark.parametrize("name", CHAPTER_NAMES)
def test_pair_agrees(name):
    """The .py source and the notebook, as git holds them, have the same cells: type and
    source, in order."""
    jupytext = pytest.importorskip("jupytext")
    py, ipynb = CHAPTERS / f"{name}.py", CHAPTERS / f"{name}.ipynb"
    assert py.exists(), (f"chapters/{ipynb.name} has no text source; run: "
                         f"jupytext --sync chapters/{ipynb.name}")
    assert ipynb.exists(), (f"chapters/{py.name} has no notebook; run: "
                            f"jupytext --set-kernel python3 --sync chapters/{py.name}")
    from_py = cells_of(jupytext.reads(committed_text(py), fmt="py:percent"))
    from_nb = cells_of(json.loads(committed_text(ipynb)))
    fix = (f"run: jupytext --sync chapters/{ipynb.name} (it copies the newer file's cells "
           f"into the older one), then git add both files")
    for i, (a, b) in enumerate(zip(from_py, from_nb)):
        if a != b:
            pytest.fail(f"{name}: cell {i} differs between .py and .ipynb:\n"
                        f"{first_difference(a, b)}\n{fix}", pytrace=False)
    assert len(from_py) == len(from_nb), (
        f"{name}: {len(from_py)} cells in the .py, {len(from_nb)} in the .ipynb; {fix}")


@pytest.mark.parametrize("newer", [".py", ".ipynb"])
def test_sync_leaves_committed_pairs_unchanged(tmp_path, monkeypatch, newer):
    """``jupytext --sync`` on the committed chapters rewrites nothing, whichever side of each
    pair is newer (after a clone the order of the timestamps is arbitrary): the files are
    in the form jupytext writes, so syncing never churns cell ids or layout."""
    pytest.importorskip("jupytext")
    chapters = committed_chapters_copy(tmp_path / "chapters")
    before = {p.name: p.read_bytes() for p in chapters.iterdir()}
    for name in CHAPTER_NAMES:
        stamp = (chapters / (name + newer)).stat().st_mtime + 10
        os.utime(chapters / (name + newer), (stamp, stamp))
    notebooks = sorted(str(p) for p in chapters.glob("*.ipynb"))
    run_jupytext(["--sync", *notebooks], monkeypatch, tmp_path)
    changed = sorted(p.name for p in chapters.iterdir() if p.read_bytes() != before.get(p.name))
    assert changed == [], f"jupytext --sync rewrote committed chapter files: {changed}"


def test_sync_after_editing_the_py_keeps_cell_ids(tmp_path, monkeypatch):
    """An edit to one cell of a .py reaches the notebook as that one change: every cell keeps
    its id, the other cells are untouched."""
    pytest.importorskip("jupytext")
    chapters = committed_chapters_copy(tmp_path / "chapters")
    name = CHAPTER_NAMES[0]
    py, ipynb = chapters / f"{name}.py", chapters / f"{name}.ipynb"
    before = json.loads(ipynb.read_text(encoding="utf-8"))
    text = py.read_text(encoding="utf-8")
    opening = "# %% [markdown]\n# "
    assert text.startswith(opening), "expected the chapter to open with a markdown cell"
    py.write_text(text.replace(opening, opening + "EDITED ", 1), encoding="utf-8")
    stamp = ipynb.stat().st_mtime + 10
    os.utime(py, (stamp, stamp))
    run_jupytext(["--sync", str(ipynb)], monkeypatch, tmp_path)
    after = json.loads(ipynb.read_text(encoding="utf-8"))
    assert [c["id"] for c in after["cells"]] == [c["id"] for c in before["cells"]]
    old, new = cells_of(before), cells_of(after)
    assert new[0] == (old[0][0], "EDITED " + old[0][1])
    assert new[1:] == old[1:]


def test_strip_tool_undoes_a_run(tmp_path):
    """A chapter run and saved in Jupyter (outputs, counts, timings, the kernel's language_info,
    widget state) comes back from tools/strip_notebooks.py byte for byte as committed."""
    strip_tool = load_strip_tool()
    for path in NOTEBOOKS:
        committed = committed_text(path)
        nb = json.loads(committed)
        for n, cell in enumerate(nb["cells"], 1):
            if cell["cell_type"] == "code":
                cell["execution_count"] = n
                cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["hi\n"]}]
                cell["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
        if "language_info" in nb["metadata"]:  # the kernel adds its details on every run
            nb["metadata"]["language_info"].update(version="3.12.3", mimetype="text/x-python")
        nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
        saved = tmp_path / path.name
        saved.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                         encoding="utf-8")
        assert unstripped_cells(json.loads(saved.read_text(encoding="utf-8")))
        assert strip_tool.main([str(saved)]) == 0
        assert saved.read_text(encoding="utf-8") == committed, f"{path.name}: not as committed"
        assert strip_tool.strip_file(saved) is False  # stripping a clean notebook is a no-op


def test_committed_text_reads_the_index_then_the_disk(tmp_path, monkeypatch):
    """The mechanism above: a run saved in the working tree is not what the tests read, staging
    it is; outside git the file on disk is read."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no enclosing repository
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.ipynb").write_text("on disk", encoding="utf-8")
    assert committed_text(plain / "a.ipynb") == "on disk"

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    nb = repo / "a.ipynb"
    nb.write_text("stripped", encoding="utf-8")
    assert committed_text(nb) == "stripped"  # untracked: the disk
    subprocess.run(["git", "-C", str(repo), "add", "a.ipynb"], check=True)
    nb.write_text("with outputs", encoding="utf-8")
    assert committed_text(nb) == "stripped"  # the learner's saved run does not count
    subprocess.run(["git", "-C", str(repo), "add", "a.ipynb"], check=True)
    assert committed_text(nb) == "with outputs"  # staged, it does


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
