"""dtypes of mixed operands: integer and bool tensors meeting floats, scalars meeting tensors.

The rules (ARCHITECTURE.md, "dtypes"; minimm.autograd.as_tensor / promote) are PyTorch's: a
Python or NumPy scalar takes the tensor's dtype unless it is of a higher kind (bool < integer
< float), when a float gives float32 (the default dtype) and an int int64; an integer or bool
tensor meeting a float tensor takes the float's dtype; otherwise NumPy's promotion.

Three layers of checks: the documented table itself (always runs); every pair of operands
over add, sub, mul, maximum, where and comparisons against PyTorch (where torch is
installed); and the same through the operators as a user writes them (``a + b``).
"""
import numpy as np
import pytest

import minimm as mm
from minimm import autograd
from minimm import functional as F

TENSOR_KINDS = ["bool", "uint8", "int8", "int32", "int64", "float16", "float32", "float64"]
SCALARS = {"py_bool": True, "py_int": 3, "py_float": 2.5, "np_int64": np.int64(3),
           "np_float64": np.float64(2.5)}
PAIRS = ([(a, b) for a in TENSOR_KINDS for b in TENSOR_KINDS + list(SCALARS)]
         + [(s, b) for s in SCALARS for b in TENSOR_KINDS])
CONDITION = np.array([True, False, True])

# The table of ARCHITECTURE.md: (left, right) -> dtype of the result, in either order.
TABLE = {
    ("int64", "py_float"): "float32", ("int32", "py_float"): "float32",
    ("uint8", "py_float"): "float32", ("bool", "py_float"): "float32",
    ("int64", "np_float64"): "float32",
    ("bool", "py_int"): "int64", ("bool", "py_bool"): "bool",
    ("int32", "py_int"): "int32", ("uint8", "py_int"): "uint8", ("int32", "np_int64"): "int32",
    ("float16", "py_float"): "float16", ("float32", "py_float"): "float32",
    ("float32", "py_int"): "float32", ("float32", "np_float64"): "float32",
    ("int64", "float32"): "float32", ("int64", "float16"): "float16",
    ("int32", "float64"): "float64", ("bool", "float32"): "float32",
    ("bool", "int32"): "int32", ("int32", "int64"): "int64", ("uint8", "int8"): "int16",
    ("float32", "float64"): "float64",
}


def _operand(kind, device):
    if kind in SCALARS:
        return SCALARS[kind]
    values = CONDITION if kind == "bool" else np.array([1, 2, 3]).astype(kind)
    return mm.tensor(values, device=device)


PROMOTED_OPS = {  # the Functions, given operands already promoted by autograd.promote
    "add": F.add, "sub": F.sub, "mul": F.mul, "maximum": F.maximum,
    "where": lambda a, b: mm.where(CONDITION, a, b), "greater": F.greater, "equal": F.equal,
}
OPERATOR_OPS = {  # as a user writes them: Python operators, F.maximum, mm.where on raw operands
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "maximum": F.maximum, "where": lambda a, b: mm.where(CONDITION, a, b),
    "greater": lambda a, b: a > b, "equal": lambda a, b: a == b,
}
BOOL_RESULT = {"greater", "equal"}


def _bool_subtraction(left, right):
    """NumPy and PyTorch both refuse to subtract booleans; not a dtype question."""
    kinds = {left, right}
    return "bool" in kinds or "py_bool" in kinds


@pytest.mark.parametrize("left, right", sorted(TABLE))
def test_documented_table(device, left, right):
    for a_kind, b_kind in ((left, right), (right, left)):
        a, b = autograd.promote(_operand(a_kind, device), _operand(b_kind, device))
        for name, op in PROMOTED_OPS.items():
            if name == "sub" and _bool_subtraction(a_kind, b_kind):
                continue
            y = op(a, b)
            expected = "bool" if name in BOOL_RESULT else TABLE[left, right]
            assert y.dtype == np.dtype(expected), f"{name}({a_kind}, {b_kind}) gave {y.dtype}"
            assert y.device == device


def test_as_tensor_rules(device, xp):
    i64 = xp.asarray(np.array([1, 2]))
    f32 = xp.asarray(np.array([1.0, 2.0], np.float32))
    b = xp.asarray(np.array([True, False]))
    assert autograd.as_tensor(2.5, like=i64).dtype == np.float32   # a float meets an int
    assert autograd.as_tensor(2.5, like=b).dtype == np.float32
    assert autograd.as_tensor(3, like=b).dtype == np.int64          # an int meets a bool
    assert autograd.as_tensor(3, like=f32).dtype == np.float32      # lower kind: like's dtype
    assert autograd.as_tensor(np.float64(3), like=f32).dtype == np.float32
    assert autograd.as_tensor([1.0, 2.0], like=i64).dtype == np.float32   # a list is weak too
    assert autograd.as_tensor(mm.Tensor(i64), like=f32).dtype == np.float32  # int array cast
    kept = mm.tensor(np.ones(2), device=device)                     # float64 stays float64
    assert autograd.as_tensor(kept, like=f32) is kept
    assert autograd.as_tensor(mm.Tensor(f32), like=i64).dtype == np.float32  # never demoted
    assert autograd.as_tensor(2.5).dtype == np.float32 and autograd.as_tensor(2).dtype == np.int64


def test_promoted_values_are_exact_and_gradients_flow(device):
    """The cast never loses what it carries: an int tensor meeting a float32 parameter."""
    w = mm.tensor([0.5, 1.5, -2.0], requires_grad=True, device=device)
    counts = mm.tensor(np.array([1, 2, 3]), device=device)
    y, c = autograd.promote(w, counts)
    assert y is w and c.dtype == np.float32 and not c.requires_grad
    (F.mul(y, c)).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 2.0, 3.0])
    assert w.grad.dtype == np.float32


def _torch_case(torch, name, a, b):
    def t(x):
        if isinstance(x, mm.Tensor):
            return torch.from_numpy(x.numpy())
        return x.item() if isinstance(x, np.generic) else x

    ta, tb = t(a), t(b)
    if name == "maximum":   # torch.maximum takes tensors: a scalar becomes a 0-d tensor of
        ta, tb = (v if isinstance(v, torch.Tensor) else torch.tensor(v) for v in (ta, tb))
    ops = {"add": lambda: ta + tb, "sub": lambda: ta - tb, "mul": lambda: ta * tb,
           "maximum": lambda: torch.maximum(ta, tb),
           "where": lambda: torch.where(torch.from_numpy(CONDITION), ta, tb),
           "greater": lambda: ta > tb, "equal": lambda: ta == tb}
    return ops[name]()


def _compare_with_torch(device, ops, promote):
    torch = pytest.importorskip("torch")
    mismatches, compared = [], 0
    for left, right in PAIRS:
        for name, op in ops.items():
            a, b = _operand(left, device), _operand(right, device)
            try:
                expected = _torch_case(torch, name, a, b)
            except (RuntimeError, TypeError):
                continue          # PyTorch refuses it (subtracting booleans): not a dtype case
            got = op(*autograd.promote(a, b)) if promote else op(a, b)
            compared += 1
            want = str(expected.dtype).replace("torch.", "")
            if got.dtype != np.dtype(want):
                mismatches.append(f"{name}({left}, {right}): minimm {got.dtype}, torch {want}")
                continue
            tol = 1e-3 if want == "float16" else 1e-6
            np.testing.assert_allclose(mm.to_numpy(got).astype(np.float64),
                                       expected.numpy().astype(np.float64), rtol=tol,
                                       err_msg=f"{name}({left}, {right})")
    assert compared > 700
    return mismatches


def test_every_pair_matches_pytorch_after_promote(device):
    mismatches = _compare_with_torch(device, PROMOTED_OPS, promote=True)
    assert not mismatches, "\n".join(mismatches)


def test_every_pair_matches_pytorch_through_the_operators(device):
    mismatches = _compare_with_torch(device, OPERATOR_OPS, promote=False)
    assert not mismatches, f"{len(mismatches)} cases:\n" + "\n".join(mismatches)


def test_integer_division_and_power_match_pytorch(device):
    torch = pytest.importorskip("torch")
    a = _operand("int64", device)
    b = mm.tensor(np.array([2, 4, 5]), device=device)
    ta, tb = torch.tensor([1, 2, 3]), torch.tensor([2, 4, 5])
    for got, want in [(a / b, ta / tb), (a / 2, ta / 2), (a ** 0.5, ta ** 0.5),
                      (2.5 ** a, 2.5 ** ta), (a ** 2, ta ** 2)]:
        assert got.dtype == np.dtype(str(want.dtype).replace("torch.", ""))
        np.testing.assert_allclose(mm.to_numpy(got), want.numpy(), rtol=1e-6)
