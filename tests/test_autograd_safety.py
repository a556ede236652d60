"""What the engine refuses instead of training silently on nothing or on stale values:

* backward() / mm.grad() of a value that does not require a gradient (no_grad, comparisons,
  constants, leaves without requires_grad) — as PyTorch does;
* requires_grad on integer and bool tensors;
* a backward through a graph whose saved tensors were changed in place after the forward
  (an optimiser step, an assignment to .data): the version counter.
"""
import numpy as np
import pytest

import minimm as mm
from minimm import autograd
from minimm import functional as F
from minimm import nn, optim

NO_GRAD_FN = r"element 0 of tensors does not require grad and does not have a grad_fn"


# --- backward of something that cannot have a gradient --------------------------------------

def _x(device, requires_grad=True):
    return mm.tensor([1.0, -2.0, 3.0], requires_grad=requires_grad, device=device)


@pytest.mark.parametrize("case, why", [
    ("under_no_grad", r"computed under mm\.no_grad\(\)"),
    ("from_a_no_grad_result", r"computed under mm\.no_grad\(\) \(or from a result of it\)"),
    ("leaf_without_requires_grad", r"a leaf that does not require grad"),
    ("constants_only", r"computed only from tensors that do not require grad"),
    ("detached", r"a leaf that does not require grad"),
    ("comparison_count", r"it is a int64 tensor \(comparisons and integer operations"),
    ("comparison", r"it is a bool tensor"),
])
def test_backward_refuses_values_without_a_graph(device, case, why):
    x = _x(device)
    if case == "under_no_grad":
        with mm.no_grad():
            y = (x * x).sum()
    elif case == "from_a_no_grad_result":
        with mm.no_grad():
            h = x * 2.0
        y = F.tanh(h).sum()
    elif case == "leaf_without_requires_grad":
        y = mm.tensor(2.0, device=device)
    elif case == "constants_only":
        y = (_x(device, requires_grad=False) * 3.0).sum()
    elif case == "detached":
        y = (x * x).sum().detach()
    elif case == "comparison_count":
        y = (x > 0).sum()
    else:
        y = (x > 0)[1]
    with pytest.raises(RuntimeError, match=rf"^backward: {NO_GRAD_FN}: .*{why}.*\(shape \(\)"):
        y.backward()
    with pytest.raises(RuntimeError, match=NO_GRAD_FN):
        y.backward(mm.tensor(np.ones(y.shape, y.dtype), device=device))  # with a grad too
    assert x.grad is None


def test_frozen_model_backward_raises_instead_of_a_silent_no_op_step(device):
    model = nn.Linear(3, 2).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(mm.tensor(np.ones((4, 3), np.float32), device=device)),
                           np.array([0, 1, 1, 0]))
    W = model.W.numpy().copy()
    with pytest.raises(RuntimeError, match=NO_GRAD_FN):
        loss.backward()
    opt.step()  # nothing has a gradient: the step changes nothing, but backward said so
    np.testing.assert_array_equal(model.W.numpy(), W)


def test_grad_refuses_outputs_and_inputs_without_a_graph(device):
    x = _x(device)
    c = _x(device, requires_grad=False)
    with mm.no_grad():
        frozen = (x * x).sum()
    with pytest.raises(RuntimeError, match=r"^grad: element 1 of outputs does not require grad "
                                           r"and does not have a grad_fn: it was computed under"):
        mm.grad([(x * x).sum(), frozen], [x])
    with pytest.raises(RuntimeError, match=r"^grad: element 0 of outputs .*leaf that does not"):
        mm.grad((c * 2.0).sum(), [x])
    with pytest.raises(RuntimeError, match=r"^grad: input 1 \(shape \(3,\), dtype float32\) "
                                           r"does not require grad"):
        mm.grad((x * c).sum(), [x, c])
    # a first derivative that is a constant has no second derivative to take (as PyTorch)
    g, = mm.grad((x * 3.0).sum(), [x], create_graph=True)
    assert not g.requires_grad
    with pytest.raises(RuntimeError, match=r"grad: element 0 of outputs"):
        mm.grad(g.sum(), [x])
    # what still works: an input that the outputs do not use gets None (allow_unused)
    unused = _x(device)
    assert mm.grad((x * x).sum(), [unused]) == (None,)


def test_leaf_that_requires_grad_is_its_own_root(device):
    x = _x(device)
    x.backward(mm.tensor([1.0, 2.0, 3.0], device=device))
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 3.0])


# --- only floating point tensors can require gradients ----------------------------------------

INTEGER_DTYPES = [np.int64, np.int32, np.uint8, np.bool_]


@pytest.mark.parametrize("dtype", INTEGER_DTYPES, ids=lambda d: np.dtype(d).name)
def test_requires_grad_refused_for_integer_and_bool_tensors(device, xp, dtype):
    a = np.array([1, 0, 1]).astype(dtype)
    name = np.dtype(dtype).name
    message = (rf"only floating point tensors can require gradients, got a {name} tensor of "
               rf"shape \(3,\)")
    with pytest.raises(RuntimeError, match=rf"^tensor: {message}"):
        mm.tensor(a, requires_grad=True, device=device)
    with pytest.raises(RuntimeError, match=rf"^Tensor: {message}"):
        mm.Tensor(xp.asarray(a), requires_grad=True)
    with pytest.raises(RuntimeError, match=rf"^Parameter: {message}"):
        nn.Parameter(xp.asarray(a))
    t = mm.tensor(a, device=device)
    with pytest.raises(RuntimeError, match=rf"^requires_grad_: {message}"):
        t.requires_grad_()
    with pytest.raises(RuntimeError, match=rf"^requires_grad: {message}"):
        t.requires_grad = True
    assert not t.requires_grad
    assert t.requires_grad_(False) is t and not t.requires_grad      # switching off is fine


def test_requires_grad_refused_for_python_ints_and_bools():
    for data in (3, [1, 2], True, [[True, False]]):
        with pytest.raises(RuntimeError, match="only floating point tensors can require gradients"):
            mm.tensor(data, requires_grad=True)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_requires_grad_accepted_for_floats(device, dtype):
    t = mm.tensor(np.ones(2, dtype), requires_grad=True, device=device)
    assert t.requires_grad and t.dtype == dtype
    assert mm.tensor([1, 2], dtype=np.float32, requires_grad=True).requires_grad  # converted
    assert mm.tensor(1.5, requires_grad=True).dtype == np.float32


def test_integer_output_of_a_function_does_not_require_grad(device):
    class ValueAndArgmax(mm.Function):
        def forward(self, x):
            return x * 2, x.argmax(keepdims=True)

        def backward(self, gy, g_index):
            return gy * 2.0

    x = _x(device)
    y, index = ValueAndArgmax()(x)
    assert y.requires_grad and not index.requires_grad and index.creator is None
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])


# --- the version counter: in-place changes between forward and backward ----------------------

STALE = (r"backward: one of the variables needed for gradient computation has been modified by "
         r"an inplace operation: the float32 tensor of shape {shape}, input {i} of {fn}, is at "
         r"version {v}; expected version {w} instead")


def _linear_step(device, opt_class, **kwargs):
    rng = np.random.default_rng(0)
    model = nn.Linear(4, 3).to(device)
    opt = opt_class(model.parameters(), **kwargs)
    x = mm.tensor(rng.standard_normal((5, 4)).astype(np.float32), device=device)
    labels = rng.integers(0, 3, 5)
    return model, opt, lambda: F.cross_entropy(model(x), labels)


@pytest.mark.parametrize("opt_class, kwargs", [
    (optim.SGD, {"lr": 0.1}), (optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (optim.Adam, {"lr": 0.01}), (optim.AdamW, {"lr": 0.01})])
def test_optimiser_step_between_forward_and_backward_is_detected(device, opt_class, kwargs):
    model, opt, loss_fn = _linear_step(device, opt_class, **kwargs)
    version = model.W._version    # Module.to assigned .data once already
    loss = loss_fn()
    loss.backward()
    opt.step()                    # the weights move; the graph of `loss` saw the old ones
    opt.zero_grad()               # zero_grad changes .grad only: it does not count
    with pytest.raises(RuntimeError, match=STALE.format(shape=r"\(4, 3\)", i=1, fn="Linear",
                                                        v=version + 1, w=version)):
        loss.backward()
    assert all(p.grad is None for p in model.parameters())


def test_version_counts_each_in_place_change(device):
    model, opt, loss_fn = _linear_step(device, optim.Adam, lr=0.01)
    W, b = model.W, model.b
    assert mm.tensor([1.0])._version == 0 and nn.Linear(2, 2).W._version == 0
    w0, b0 = W._version, b._version                     # .to(device) assigned .data: 1 each
    loss_fn().backward()
    opt.step()
    assert W._version == w0 + 1 and b._version == b0 + 1
    opt.zero_grad()
    assert W._version == w0 + 1                         # zero_grad does not count
    W.grad = None
    b.grad = mm.tensor(np.ones(3, np.float32), device=device)
    opt.step()                                          # W has no gradient: skipped, not bumped
    assert W._version == w0 + 1 and b._version == b0 + 2
    W.data = W.data * 2                                 # assigning .data counts
    W.data -= 1                                         # so does an augmented assignment
    assert W._version == w0 + 3
    autograd.increment_version(W)
    autograd.increment_version([W, b])
    assert W._version == w0 + 5 and b._version == b0 + 3


def test_normal_training_loop_has_no_false_alarm(device):
    """forward, backward, step, repeated: each backward runs on a fresh graph, and the
    gradient is the one at the current weights (checked against a NumPy transcription of
    ∂/∂W mean CE(xW + b) = xᵀ(softmax(xW + b) − onehot) / N)."""
    rng = np.random.default_rng(0)
    model = nn.Linear(4, 3).to(device)
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 5)
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(mm.tensor(x, device=device)), labels).backward()
        z = x.astype(np.float64) @ model.W.numpy() + model.b.numpy()
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        expected = x.T @ (p - np.eye(3)[labels]) / len(x)
        np.testing.assert_allclose(model.W.grad.numpy(), expected, rtol=1e-4, atol=1e-6)
        opt.step()


@pytest.mark.parametrize("change", ["assign", "augmented", "load_state_dict", "increment"])
def test_changing_an_input_after_forward_is_detected(device, change):
    x = mm.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True, device=device)
    w = mm.tensor(np.ones((3, 2)), requires_grad=True, device=device)
    y = F.tanh(x @ w).sum()
    if change == "assign":
        w.data = w.data * 3
    elif change == "augmented":
        w.data += 1
    elif change == "load_state_dict":
        layer = nn.Linear(3, 2).to(device)
        version = layer.W._version
        y = layer(mm.tensor(np.ones((2, 3), np.float32), device=device)).sum()
        layer.load_state_dict({"W": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)})
        with pytest.raises(RuntimeError, match=rf"the float32 tensor of shape \(3, 2\), input 1 "
                                               rf"of Linear, is at version {version + 1}"):
            y.backward()
        return
    else:
        autograd.increment_version(w)
    with pytest.raises(RuntimeError, match=r"the float64 tensor of shape \(3, 2\), input 1 of "
                                           r"MatMul, is at version 1; expected version 0"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"input 1 of MatMul"):
        mm.grad(y, [x])                                 # grad checks too


def test_changing_a_saved_output_is_detected(device):
    """Exp's backward uses its output y = eˣ: overwriting y would give a wrong gradient."""
    x = _x(device)
    y = F.exp(x)
    y.data = y.data * 0
    with pytest.raises(RuntimeError, match=r"output 0 of Exp, is at version 1; expected version 0"):
        y.sum().backward()


def test_every_input_is_checked_even_where_pytorch_would_not_need_it(device):
    """minimm cannot know which inputs a backward reads, so it checks them all: Add's backward
    needs neither operand's values (PyTorch would not complain), minimm still refuses."""
    x, w = _x(device), _x(device)
    y = (x + w).sum()
    w.data = w.data + 1
    with pytest.raises(RuntimeError, match=r"input 1 of Add"):
        y.backward()


def test_changes_after_backward_and_a_new_forward_are_fine(device):
    x = _x(device)
    (x * x).sum().backward()
    x.data = x.data * 2          # after the backward: nothing stale
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * np.array([2.0, -4.0, 6.0]))


def test_writing_into_the_array_directly_is_not_detected(device):
    """The documented limit: minimm sees assignments to .data, not writes into the array."""
    x = _x(device)
    w = _x(device)
    y = (x * w).sum()
    w.data[...] = 10.0             # NumPy/CuPy writes in place; the version stays 0
    assert w._version == 0
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [10.0, 10.0, 10.0])  # the new values' gradient
