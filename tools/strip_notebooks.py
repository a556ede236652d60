#!/usr/bin/env python3
"""Strip what running a notebook adds, in place: outputs, execution counts, run timings,
widget state and the kernel's details in ``language_info`` (all but its name).

Run it on a chapter you ran before you ``git add`` it:

    python tools/strip_notebooks.py chapters/05_attention.ipynb

With no arguments it strips every notebook in chapters/. Cells, their ids and everything else
stay as they are, so a notebook that was only run comes back byte for byte as committed.
Standard library only. Each file is rewritten through a temporary file and os.replace, so it is
never half-written.
"""
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_CELL_METADATA = ("execution", "ExecuteTime")  # timings JupyterLab / nbextensions record


def strip(nb):
    """Strip a notebook dict in place; return True if anything changed."""
    changed = False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            if cell.get("outputs") != []:
                cell["outputs"] = []
                changed = True
            if cell.get("execution_count") is not None:
                cell["execution_count"] = None
                changed = True
        meta = cell.get("metadata", {})
        for key in RUN_CELL_METADATA:
            if key in meta:
                del meta[key]
                changed = True
    meta = nb.get("metadata", {})
    if "widgets" in meta:
        del meta["widgets"]
        changed = True
    info = meta.get("language_info")
    if isinstance(info, dict) and set(info) - {"name"}:
        # the kernel writes its Python version, lexer, mimetype ... on every run
        meta["language_info"] = {"name": info["name"]} if "name" in info else {}
        changed = True
    return changed


def strip_file(path):
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    if not strip(nb):
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            # the layout nbformat (Jupyter, jupytext) writes: sorted keys, indent 1
            json.dump(nb, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    paths = [Path(p) for p in argv] or sorted((ROOT / "chapters").glob("*.ipynb"))
    for p in paths:
        print(("stripped  " if strip_file(p) else "clean     ") + str(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
