"""ARCHITECTURE.md stays true: each layer imports only the layers below it, the files it names
exist, and its "how to add an operation" example runs and passes a gradient check.

The import rule is read from the source (``ast``), lazy imports inside functions included.
A new module at the top of the package (next to ``train.py``) may import anything; a module
below may import only what its row of ARCHITECTURE.md's table lists — so an upward import,
into an old module or a new one, fails here.
"""
import ast
import pathlib
import re
import textwrap

import numpy as np

import minimm as mm

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minimm"
TEXT = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")

LOWER = {"backend", "_io", "autograd"}
ALLOWED = {  # group -> the groups it may import (its own included)
    "backend": set(),
    "_io": set(),
    "autograd": {"backend"},
    "functional": {"backend", "autograd"},
    "nn": {"backend", "autograd", "functional"},
    "optim": {"backend", "autograd", "functional", "nn"},
    "models": {"backend", "autograd", "functional", "nn", "data"},  # data: normalize_images only
    "data": {"backend", "_io"},
    "gradcheck": {"backend", "autograd"},
    "serialization": {"backend", "autograd", "_io"},
    "metrics": LOWER | {"functional", "nn", "optim", "models", "data"},
    "plot": LOWER | {"functional", "nn", "optim", "models", "data", "metrics"},
}
TRAINING = {"train", "experiments"}   # may use everything below the command line


def _group(dotted):
    """minimm.functional.math -> functional; minimm.train -> train; minimm -> minimm."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path):
    """The minimm modules that ``path`` imports, as dotted names."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1])   # minimm/nn/conv.py and minimm/nn/__init__.py: minimm.nn
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "minimm"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "minimm":
                continue
            if node.module is None or target == "minimm":   # from . import a, b
                found += [f"{target}.{a.name}" for a in node.names]
            else:
                found.append(target)
    return found


def test_each_layer_imports_only_layers_below_it():
    violations = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30
    for path in modules:
        rel = path.relative_to(ROOT)
        here = _group(".".join(rel.with_suffix("").parts))
        if here in ("__init__", "__main__", "bench"):
            continue   # minimm/__init__.py and the command-line tools sit on top
        for target in _imports(path):
            there = _group(target)
            if there == here:
                continue
            if here in ALLOWED:
                ok = there in ALLOWED[here]
            elif here in TRAINING:
                ok = there != "__main__"
            else:
                ok = True   # a new top-level module: on top of the library
            if not ok:
                violations.append(f"{rel} ({here}) imports {target} ({there})")
    assert not violations, "imports against ARCHITECTURE.md's layers:\n" + "\n".join(violations)


def test_the_import_reader_sees_relative_and_lazy_imports():
    got = set(_imports(PACKAGE / "nn" / "conv.py"))
    assert {"minimm.functional", "minimm.functional.utils", "minimm.nn.init",
            "minimm.nn.module"} <= got
    assert "minimm.experiments.spiral" in set(_imports(PACKAGE / "__main__.py"))  # in a function


def test_named_files_exist():
    named = set(re.findall(r"`(minimm/[\w/]+(?:\.py)?/?)`", TEXT))
    named |= {f"minimm/{m}" for m in re.findall(r"`(\w+\.py)`", TEXT)
              if (PACKAGE / m).exists() or m in ("train.py", "metrics.py", "plot.py")}
    assert {"minimm/autograd.py", "minimm/models/", "minimm/functional/"} <= named
    coming = {"minimm/experiments/"}   # announced in the table as being added
    missing = [n for n in sorted(named - coming) if not (ROOT / n).exists()]
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"
    for test in re.findall(r"`(tests/\w+\.py)`", TEXT):
        assert (ROOT / test).exists(), test


def test_add_an_operation_example_runs_and_is_gradchecked():
    block = re.search(r"```python\n( *class Softplus\(Function\):.*?)```", TEXT, re.S).group(1)
    block = textwrap.dedent(block)
    from minimm import backend
    from minimm.autograd import Function
    from minimm.functional import sigmoid
    namespace = {"Function": Function, "backend": backend, "sigmoid": sigmoid}
    exec(compile(block, "ARCHITECTURE.md", "exec"), namespace)
    softplus = namespace["softplus"]
    a = np.array([[-40.0, -1.5, 0.0], [0.3, 2.0, 40.0]])
    np.testing.assert_allclose(softplus(mm.tensor(a)).numpy(), np.logaddexp(0.0, a), rtol=1e-12)
    assert mm.gradcheck(softplus, [np.array([-2.0, -0.1, 0.4, 3.0])])
    assert mm.gradgradcheck(softplus, [np.array([[-1.0, 0.5], [2.0, -3.0]])])
    assert softplus(mm.tensor(np.float32([1.0, 2.0]))).dtype == np.float32
