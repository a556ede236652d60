#!/usr/bin/env python3
"""Strip outputs, execution counts and widget state from every chapters/*.ipynb, in place.

Run before committing:  python tools/strip_notebooks.py [notebook ...]
With no arguments it strips every notebook in chapters/. Standard library only.
Each file is rewritten through a temporary file and os.replace, so it is never half-written.
"""
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    meta = nb.get("metadata", {})
    if "widgets" in meta:
        del meta["widgets"]
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
            json.dump(nb, f, indent=1, ensure_ascii=False)
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
