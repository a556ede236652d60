"""Every shell command that chapter 14 and the README's "Compression and data parallelism"
section print is parsed by the real argument parser of the program it runs."""
import importlib.util
import pathlib
import re
import shlex

import pytest

from minimm import distributed
from minimm.__main__ import build_parser

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMMAND = re.compile(r"((?:mpiexec -n \d+ )?python (?:-m minimm|\S+\.py)[^\"`\n]*)")


def readme_section():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Compression and data parallelism")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def commands():
    found = COMMAND.findall((ROOT / "chapters" / "14_efficiency.py").read_text(encoding="utf-8"))
    found += COMMAND.findall(readme_section())
    return sorted({c.strip().rstrip(":.,)") for c in found})


def parse(command):
    argv = shlex.split(command.replace("\\\n", " "))
    if argv[0] == "mpiexec":
        argv = argv[3:]                              # mpiexec -n N python ...
    assert argv[0] == "python", command
    if argv[1:3] == ["-m", "minimm"]:
        return build_parser().parse_args(argv[3:])
    if argv[1:3] == ["-m", "minimm.distributed"]:
        return distributed.build_parser().parse_args(argv[3:])
    script = (ROOT / "chapters" / argv[1]).resolve()
    if not script.exists():
        script = ROOT / argv[1]
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser().parse_args(argv[2:])


def test_commands_are_found():
    found = commands()
    assert any("amp_speed.py" in c for c in found) and any("allreduce_time.py" in c for c in found)
    assert any("compression_table.py" in c for c in found)
    assert any("--distributed" in c for c in found) and any("minimm.distributed" in c
                                                             for c in found)


@pytest.mark.parametrize("command", commands())
def test_command_parses(command):
    assert parse(command) is not None
