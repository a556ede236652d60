"""Every shell command for minimm that the README or a chapter prints is parsed by the real
argument parser (``build_parser().parse_args``) and must parse; the README's set-up commands
name pip extras that pyproject.toml defines.

A command is ``python -m minimm ...`` anywhere in a line, or ``minimm ...`` (the console
script) at the start of a code span, of a line in a fenced code block or after a ``$``
prompt. It ends at a backtick, ``&&``, ``;``, ``|``, a ``#`` comment, the end of the line,
or the closing quote of a string literal it opens; a ``...`` in it stands for "the rest as
above". The chapters are read in every form they exist in: the jupytext sources
``chapters/*.py``, the notebooks ``chapters/*.ipynb`` and, while they exist, the older
generators ``tools/chapters/*.py``.
"""
import contextlib
import io
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from minimm.__main__ import build_parser

ROOT = Path(__file__).resolve().parent.parent
PYTHON_M = re.compile(r"(?<![\w/.-])python3? -m minimm(?=\s|$)")
SPAN = re.compile(r"`(minimm\s)")                    # `minimm train ...`
LINE = re.compile(r"^[#\s]*(?:[$!]\s*)?(minimm\s)")     # in a fence; "# " for jupytext
PROMPT = re.compile(r"^[#\s]*[$!]\s*(minimm\s)")
END = re.compile(r"`|&&|;|\||\s#|\\n")


def documents():
    """(name, text) of the README and of every chapter in every form it exists in."""
    docs = [("README.md", (ROOT / "README.md").read_text(encoding="utf-8"))]
    for pattern in ("chapters/*.py", "tools/chapters/*.py"):
        docs += [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8"))
                 for p in sorted(ROOT.glob(pattern))]
    for path in sorted(ROOT.glob("chapters/*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                         for c in cells)
        docs.append((str(path.relative_to(ROOT)), text))
    return docs


def commands(text):
    """The minimm commands in ``text``, as token lists without the ``python -m minimm``."""
    found, fenced = [], False
    text = re.sub(r"\\\n\s*", " ", text)                  # shell line continuations
    for line in text.splitlines():
        if line.lstrip("# ").startswith("```"):
            fenced = not fenced
            continue
        starts = [(m.start(), m.end()) for m in PYTHON_M.finditer(line)]
        starts += [(m.start(1), m.end(1)) for m in SPAN.finditer(line)]
        starts += [(m.start(1), m.end(1)) for m in (LINE if fenced else PROMPT).finditer(line)]
        for begin, start in sorted(set(starts)):
            rest = line[start:]
            end = END.search(rest)
            command = rest[:end.start()] if end else rest
            quote = line[begin - 1] if begin and line[begin - 1] in "\"'" else None
            if quote:                                      # print("python -m minimm ...")
                command = command.split(quote)[0]
            tokens = shlex.split(command)
            if tokens and tokens[-1] != "...":
                tokens[-1] = tokens[-1].rstrip(".,:)")
            found.append([t for t in tokens if t])
    return found


def parses(tokens):
    """(True, "") if the parser accepts ``tokens``, else (False, its message)."""
    err = io.StringIO()
    for attempt in (tokens, [t for t in tokens if t != "..."]):    # "..." elides the rest
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(attempt)
            return True, ""
        except SystemExit as e:
            if e.code == 0:                                          # --help
                return True, ""
    return False, err.getvalue().strip()


ALL = [(name, tokens) for name, text in documents() for tokens in commands(text)]


def test_the_commands_are_found():
    readme = [tokens for name, tokens in ALL if name == "README.md"]
    assert len(readme) >= 5, readme            # train (set-up and offline), evaluate, demo
    assert {t[0] for t in readme} >= {"train", "evaluate", "demo"}
    assert any(name.startswith("chapters/") for name, _ in ALL)
    # the extraction itself, on the forms the documents use
    assert commands("run `python -m minimm demo --steps 5`.") == [["demo", "--steps", "5"]]
    assert commands("# python -m minimm train --epochs 10      # --data PATH") == [
        ["train", "--epochs", "10"]]
    assert commands('a && python -m minimm train --out "runs/a b" && b') == [
        ["train", "--out", "runs/a b"]]
    assert commands("```\nminimm evaluate --checkpoint m.npz\n```\n`minimm demo`") == [
        ["evaluate", "--checkpoint", "m.npz"], ["demo"]]
    assert commands("import minimm as mm; the `minimm/train.py` file, minimm ms") == []
    assert commands("minimm (mini multimodal) is a library\n```\n# minimm demo\n```") == [
        ["demo"]]
    assert commands("$ minimm bench --no-torch; ls") == [["bench", "--no-torch"]]
    assert commands("`python -m minimm train --data ...`") == [["train", "--data", "..."]]
    assert commands("print('python -m minimm demo --steps 3', x)") == [["demo", "--steps", "3"]]
    assert parses(["train", "--epochs", "0"])[0] is False           # the check can fail


@pytest.mark.parametrize("name,tokens", ALL, ids=[f"{n}: {' '.join(t)}" for n, t in ALL])
def test_every_printed_command_parses(name, tokens):
    ok, message = parses(tokens)
    assert ok, f"{name}: `python -m minimm {' '.join(tokens)}` does not parse: {message}"


def test_readme_set_up_commands_name_extras_that_exist():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    set_up = [line.strip() for line in readme.splitlines()
              if line.startswith("python3 -m venv .venv && . .venv/bin/activate && ")]
    assert len(set_up) == 2, set_up                 # the main job and the tests
    named = set()
    for line in set_up + [line.strip() for line in readme.splitlines()
                          if line.startswith("pip install -e")]:
        steps = [s.strip() for s in line.split("&&")]
        installs = [re.fullmatch(r'pip install -e "\.\[([\w,-]+)\]"', s) for s in steps]
        installed = set()
        for match in filter(None, installs):
            for extra in match.group(1).split(","):
                assert extra in extras, f"README installs extra {extra!r}; pyproject has " \
                                        f"{sorted(extras)}"
                named.add(extra)
                installed |= {re.split(r"[<>=\[ ]", d)[0] for d in extras[extra]}
        assert any(installs), line
        for step in steps[steps.index(next(s for s, m in zip(steps, installs) if m)) + 1:]:
            if step.startswith("python -m pytest"):
                assert "pytest" in installed, line
            if step.startswith("jupyter lab"):
                assert "jupyterlab" in installed, line
    assert {"notebooks", "dev"} <= named
    for group in re.findall(r"\.\[([\w,-]+)\]", readme):     # also "Optional extras: `.[gpu]`"
        for extra in group.split(","):
            assert extra in extras, extra
    # the bare `minimm` command is the console script of the package
    assert pyproject["project"]["scripts"]["minimm"] == "minimm.__main__:main"
