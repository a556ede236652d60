"""Bad shapes get a ValueError that names the operation and the shapes involved."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn


def _t(device, *shape, dtype=np.float64):
    return mm.tensor(np.ones(shape, dtype), requires_grad=True, device=device)


@pytest.mark.parametrize("a,b,match", [
    ((2, 3), (4, 5), r"matmul: shapes \(2, 3\) and \(4, 5\) are not aligned \(3 columns vs 4 rows\)"),
    ((3,), (4,), r"matmul: shapes \(3,\) and \(4,\) are not aligned"),
    ((2, 3), (2,), r"matmul: shapes \(2, 3\) and \(2,\) are not aligned"),
    ((3,), (2, 3), r"matmul: shapes \(3,\) and \(2, 3\) are not aligned"),
    ((2, 3, 4), (3, 4, 5), r"matmul of \(2, 3, 4\) and \(3, 4, 5\) \(batch dimensions\): shapes "
                           r"\(2,\) and \(3,\) cannot be broadcast together"),
    ((), (3,), r"matmul: operands must be at least 1-D, got shapes \(\) and \(3,\)"),
])
def test_matmul_shape_errors(device, a, b, match):
    with pytest.raises(ValueError, match=match):
        _t(device, *a) @ _t(device, *b)
    with pytest.raises(ValueError, match=match):
        F.matmul(_t(device, *a, dtype=np.float32), _t(device, *b, dtype=np.float32))


@pytest.mark.parametrize("name,f", [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("maximum", F.maximum), ("add", F.add), ("mul", F.mul),
    ("where", lambda a, b: mm.where(True, a, b)),
])
@pytest.mark.parametrize("a,b,dim", [((2, 3), (4,), "-1: 3 vs 4"), ((2, 3), (3, 3), "-2: 2 vs 3"),
                                     ((5, 1, 2), (3, 2, 2), "-3: 5 vs 3")], ids=str)
def test_broadcasting_errors(device, name, f, a, b, dim):
    with pytest.raises(ValueError, match=rf"^{name}: shapes {_re(a)} and {_re(b)} cannot be "
                                         rf"broadcast together \(dimension {dim}\)$"):
        f(_t(device, *a), _t(device, *b))


def _re(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_broadcasting_error_with_plain_array_operand(device):
    x = _t(device, 2, 3)
    with pytest.raises(ValueError, match=r"mul: shapes \(2, 3\) and \(2,\) cannot be broadcast"):
        x * mm.tensor(np.ones(2), device=device).data


def test_concat_errors(device):
    with pytest.raises(ValueError, match=r"concat: tensor 1 has shape \(2, 4\), which does not "
                                         r"match tensor 0's shape \(3, 4\) outside axis 1"):
        mm.concat([_t(device, 3, 4), _t(device, 2, 4)], axis=1)
    with pytest.raises(ValueError, match=r"concat: tensor 2 has shape \(2, 3, 1\), which does not "
                                         r"match tensor 0's shape \(2, 3\)"):
        mm.concat([_t(device, 2, 3), _t(device, 2, 1), _t(device, 2, 3, 1)], axis=1)
    with pytest.raises(ValueError, match=r"concat: axis 2 is out of range for tensors of shape "
                                         r"\(2, 3\)"):
        mm.concat([_t(device, 2, 3), _t(device, 2, 3)], axis=2)
    with pytest.raises(ValueError, match=r"concat: axis -3 is out of range"):
        mm.concat([_t(device, 2, 3), _t(device, 2, 3)], axis=-3)
    with pytest.raises(ValueError, match=r"concat: needs at least one tensor"):
        mm.concat([])


def test_stack_errors(device):
    with pytest.raises(ValueError, match=r"stack: tensor 1 has shape \(3, 2\) but tensor 0 has "
                                         r"shape \(2, 3\)"):
        mm.stack([_t(device, 2, 3), _t(device, 3, 2)])
    with pytest.raises(ValueError, match=r"stack: needs at least one tensor"):
        mm.stack([])
    with pytest.raises(ValueError, match=r"expand_dims: axis 3 is out of range for shape \(2, 3\)"):
        mm.stack([_t(device, 2, 3), _t(device, 2, 3)], axis=3)


def test_reshape_errors(device):
    with pytest.raises(ValueError, match=r"reshape: cannot reshape an array of shape \(2, 3\) "
                                         r"\(6 elements\) into shape \(4, 2\)"):
        _t(device, 2, 3).reshape(4, 2)
    with pytest.raises(ValueError, match=r"reshape: cannot reshape an array of shape \(2, 3\) "
                                         r"\(6 elements\) into shape \(4, -1\)"):
        F.reshape(_t(device, 2, 3), (4, -1))


def test_split_errors(device):
    with pytest.raises(ValueError, match=r"split: sizes \[1, 2\] add up to 3, but axis 1 of "
                                         r"shape \(2, 4\) has 4"):
        mm.split(_t(device, 2, 4), [1, 2], axis=1)
    with pytest.raises(ValueError, match=r"split: axis 0 of shape \(3, 2\) does not divide into "
                                         r"2 equal sections"):
        mm.split(_t(device, 3, 2), 2)


def test_broadcast_to_and_squeeze_errors(device):
    with pytest.raises(ValueError, match=r"broadcast_to: shapes \(3,\) and \(2, 4\) cannot be "
                                         r"broadcast together"):
        F.broadcast_to(_t(device, 3), (2, 4))
    with pytest.raises(ValueError, match=r"broadcast_to: cannot broadcast shape \(3, 1\) to "
                                         r"\(3,\)"):
        F.broadcast_to(_t(device, 3, 1), (3,))
    with pytest.raises(ValueError, match=r"broadcast_to: cannot broadcast shape \(2, 3\) to "
                                         r"\(1, 3\)"):
        F.broadcast_to(_t(device, 2, 3), (1, 3))
    with pytest.raises(ValueError, match=r"squeeze: axis 0 of shape \(2, 1\) has size 2, not 1"):
        F.squeeze(_t(device, 2, 1), 0)


def test_errors_leave_no_graph_behind(device):
    """A failed op raises before recording anything: the inputs stay usable."""
    a, b = _t(device, 2, 3), _t(device, 4)
    with pytest.raises(ValueError):
        a + b
    (a * 2.0).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.full((2, 3), 2.0))


# -- non-float input to float operations --------------------------------------------------------
_HINT = (r"must be floating point, got dtype {dtype}; convert it first, e\.g\. "
         r"x\.astype\(np\.float32\); for uint8 images minimm\.data\.normalize_images\(x\) or "
         r"x\.astype\(np\.float32\) / 255")


def _images(device, dtype=np.uint8, shape=(2, 3, 8, 8)):
    return mm.tensor(np.random.default_rng(0).integers(0, 256, shape).astype(dtype),
                     device=device)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
@pytest.mark.parametrize("layer, shape, op", [
    (lambda: nn.Conv2d(3, 4, 3), (2, 3, 8, 8), "conv2d"),
    (lambda: nn.Linear(8, 4), (2, 8), "linear"),
    (lambda: nn.LSTM(8, 4), (2, 5, 8), "lstm"),
    (lambda: nn.LayerNorm(8), (2, 8), "layer_norm"),
    (lambda: nn.BatchNorm2d(3), (2, 3, 4, 4), "batch_norm"),
    (lambda: nn.MultiHeadAttention(8, 2), (2, 5, 8), "linear"),
    (lambda: nn.TransformerEncoderLayer(8, 2, 16), (2, 5, 8), "layer_norm"),
], ids=["Conv2d", "Linear", "LSTM", "LayerNorm", "BatchNorm2d", "MultiHeadAttention",
        "TransformerEncoderLayer"])
def test_float_layers_refuse_integer_input_and_say_how_to_normalise(device, layer, shape, op,
                                                                     dtype):
    """Raw CIFAR-10 pixels (uint8, what load_cifar10 returns) into a float layer: PyTorch
    refuses ("expected scalar type Float"); NumPy would compute in float64 on 0–255 values."""
    m = layer().to(device)
    x = _images(device, dtype, shape)
    args = (x, x, x) if isinstance(m, nn.MultiHeadAttention) else (x,)
    with pytest.raises(TypeError, match=rf"^{op}: input " + _HINT.format(dtype=np.dtype(dtype))):
        m(*args)


def test_the_hint_works_normalised_images_go_through(device):
    from minimm.data import normalize_images
    conv = nn.Conv2d(3, 4, 3).to(device)
    images = _images(device)
    with pytest.raises(TypeError, match="normalize_images"):
        conv(images)
    for x in (normalize_images(images.data), images.data.astype(np.float32) / 255):
        y = conv(mm.tensor(x, device=device))
        assert y.dtype == np.float32 and y.shape == (2, 4, 6, 6)


def test_the_article_model_refuses_raw_pixels(device):
    from minimm.models import ImageBranch
    with pytest.raises(TypeError, match=r"conv2d: input must be floating point, got dtype uint8"):
        ImageBranch().to(device)(_images(device, shape=(2, 3, 32, 32)))


@pytest.mark.parametrize("f, op, name", [
    (lambda x: F.cross_entropy(x, np.array([0, 1])), "cross_entropy", "logits"),
    (lambda x: F.cross_entropy_simple(x, np.array([0, 1])), "cross_entropy", "logits"),
    (lambda x: F.softmax(x, axis=1), "softmax", "input"),
    (lambda x: F.log_softmax(x, axis=1), "log_softmax", "input"),
    (lambda x: F.masked_softmax(x), "masked_softmax", "input"),
    (F.gelu, "gelu", "input"),
    (lambda x: F.linear(x, np.ones((3, 2), np.float32)), "linear", "input"),
    (lambda x: F.layer_norm(x, 3), "layer_norm", "input"),
    (lambda x: F.scaled_dot_product_attention(x, x, x), "scaled_dot_product_attention", "q"),
    (lambda x: F.lstm_cell(x, np.zeros((2, 1)), np.zeros((2, 1)), np.ones((3, 4)),
                           np.ones((1, 4))), "lstm_cell", "input"),
])
def test_float_operations_refuse_integer_input(device, f, op, name):
    """Integer logits gave a truncated integer loss (3 for [[1, 5], [3, 0]]): refused now."""
    x = mm.tensor(np.array([[1, 5, 2], [3, 0, 1]]), device=device)
    with pytest.raises(TypeError, match=rf"^{op}: {name} " + _HINT.format(dtype="int64")):
        f(x)
