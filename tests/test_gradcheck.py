"""The gradient checker itself: it passes correct Functions and catches planted wrong ones."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F


class Square(mm.Function):
    """y = x²; ∂y/∂x = 2x (correct)."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        x, = self.inputs
        return gy * 2.0 * x


class SquareOffByTenPercent(Square):
    """A planted bug: the gradient is 1.1 times too large."""

    def backward(self, gy):
        x, = self.inputs
        return gy * 2.2 * x


class RowScale(mm.Function):
    """y = A · b[:, None] for a square A: the correct ∂L/∂A is gy · b[:, None]."""

    def forward(self, A, b):
        return A * b[:, None]

    def backward(self, gy):
        A, b = self.inputs
        return gy * F.expand_dims(b, 1), (gy * A).sum(axis=1)


class RowScaleTransposed(RowScale):
    """A planted bug: the gradient of A is transposed (same shape, wrong values)."""

    def backward(self, gy):
        ga, gb = super().backward(gy)
        return ga.T, gb


class SquareConstantBackward(mm.Function):
    """First derivative right, second wrong: 2x is built from a constant array, so the graph
    recorded by create_graph does not see that it depends on x."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        x, = self.inputs
        return gy * mm.Tensor(2.0 * x.data)


def _x(device, shape=(2, 3), seed=0):
    return mm.tensor(np.random.default_rng(seed).uniform(0.5, 1.5, shape), device=device).data


@pytest.mark.parametrize("mode", ["exhaustive", "random", "auto"])
def test_correct_function_passes(device, mode):
    assert mm.gradcheck(lambda x: Square()(x), [_x(device)], mode=mode)
    assert mm.gradcheck(lambda A, b: RowScale()(A, b), [_x(device, (3, 3)), _x(device, (3,), 1)],
                        mode=mode)


def test_correct_function_passes_gradgradcheck(device):
    assert mm.gradgradcheck(lambda x: Square()(x), [_x(device)])


@pytest.mark.parametrize("mode", ["exhaustive", "random"])
def test_catches_scaled_gradient(device, mode):
    where = r"index \(\d+, \d+\)" if mode == "exhaustive" else r"random direction \d+"
    with pytest.raises(mm.GradcheckError,
                       match=r"gradcheck failed:\n  input 0 \(shape \(2, 3\)\): \d+ of \d+ "
                             r"(elements|directions) disagree; max abs error \S+, max rel error "
                             rf"\S+; worst at {where}: analytic \S+, numeric \S+"):
        mm.gradcheck(lambda x: SquareOffByTenPercent()(x), [_x(device)], mode=mode)


def test_report_names_the_worst_element_and_both_values(device):
    a = np.array([[1.0, 2.0, 3.0]])
    with pytest.raises(mm.GradcheckError) as info:
        mm.gradcheck(lambda x: SquareOffByTenPercent()(x).sum(), [mm.tensor(a, device=device).data],
                     mode="exhaustive")
    message = str(info.value)
    # with a scalar output the error at element j is 0.2·xⱼ·ḡ: largest at x = 3, index (0, 2)
    assert "input 0 (shape (1, 3)): 3 of 3 elements disagree" in message
    assert "worst at index (0, 2)" in message
    analytic, numeric = [float(v) for v in
                         message.split("analytic ")[1].split(", numeric ")]
    assert analytic == pytest.approx(1.1 * numeric, rel=1e-5)


@pytest.mark.parametrize("mode", ["exhaustive", "random"])
def test_catches_transposed_gradient_and_names_the_input(device, mode):
    with pytest.raises(mm.GradcheckError, match=r"input 0 \(shape \(3, 3\)\)") as info:
        mm.gradcheck(lambda A, b: RowScaleTransposed()(A, b),
                     [_x(device, (3, 3)), _x(device, (3,), 1)], mode=mode)
    assert "input 1" not in str(info.value)  # b's gradient is right


def test_names_the_second_input(device):
    class WrongSecond(mm.Function):
        def forward(self, a, b):
            return a * b

        def backward(self, gy):
            a, b = self.inputs
            return gy * b, gy * a * 0.5

    with pytest.raises(mm.GradcheckError, match=r"input 1 \(shape \(2, 3\)\)") as info:
        mm.gradcheck(lambda a, b: WrongSecond()(a, b), [_x(device), _x(device, (2, 3), 1)])
    assert "input 0" not in str(info.value)


def test_integer_inputs_are_passed_through(device):
    labels = mm.tensor(np.array([2, 0]), device=device).data
    assert mm.gradcheck(F.cross_entropy, [_x(device), labels])


def test_raise_exception_false_returns_false(device):
    assert mm.gradcheck(lambda x: SquareOffByTenPercent()(x), [_x(device)],
                        raise_exception=False) is False
    assert mm.gradcheck(lambda x: Square()(x), [_x(device)], raise_exception=False) is True
    assert mm.gradgradcheck(lambda x: SquareConstantBackward()(x), [_x(device)],
                            raise_exception=False) is False


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rejects_low_precision_inputs(device, dtype):
    x = mm.tensor(np.ones((2, 2), dtype), device=device).data
    with pytest.raises(TypeError, match=rf"gradcheck: input 0 is {np.dtype(dtype).name}; finite "
                                        r"differences need float64"):
        mm.gradcheck(lambda t: t * t, [x])


def test_gradgradcheck_catches_wrong_second_derivative(device):
    # the first derivative is right ...
    assert mm.gradcheck(lambda x: SquareConstantBackward()(x), [_x(device)])
    # ... the second is not: ∂(2x·ḡ)/∂x = 2ḡ, but the recorded graph says 0
    with pytest.raises(mm.GradcheckError, match=r"input 0 \(shape \(2, 3\)\): 6 of 6 elements "
                                                r"disagree.*analytic 0\.0+e\+00"):
        mm.gradgradcheck(lambda x: SquareConstantBackward()(x), [_x(device)])


def test_constant_function_has_zero_gradient(device):
    """An output that does not depend on the input: the analytic gradient is zero, and
    the check agrees with the (zero) finite differences."""
    assert mm.gradcheck(lambda x: mm.tensor(np.ones(3), device=device), [_x(device)])
    assert mm.gradgradcheck(lambda x: x * 3.0, [_x(device)])  # constant first derivative


def test_multiple_outputs(device):
    assert mm.gradcheck(lambda x: (F.tanh(x), x * x), [_x(device)])

    class HalfWrong(mm.Function):
        def forward(self, x):
            return x * 2, x * 3

        def backward(self, g1, g2):
            return g1 * 2.0 + g2 * 2.0  # should be 3 for the second output

    with pytest.raises(mm.GradcheckError):
        mm.gradcheck(lambda x: HalfWrong()(x), [_x(device)])


def test_random_mode_on_a_larger_input(device):
    a = _x(device, (40, 30))  # 1,200 elements: "auto" picks random directions
    assert mm.gradcheck(lambda x: F.softmax(x, axis=1), [a])
    with pytest.raises(mm.GradcheckError, match="random direction"):
        mm.gradcheck(lambda x: SquareOffByTenPercent()(x), [a])
