"""Convolution and pooling on NCHW images, through im2col / col2im.

im2col copies every kh × kw window of the (zero-padded) input into a column, so that a
convolution becomes one matrix product per image:

    col[n, (c, i, j), (p, q)] = x_pad[n, c, s_h·p + i, s_w·q + j]
    Y[n] = W₂ · col[n] + b,        W₂ = W.reshape(C_out, C·kh·kw)

col2im is the adjoint (transpose) of that linear map: it adds every column entry back to the
pixel it was copied from, so ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩. That is why each is the other's
backward, and why a convolution built on the pair is differentiable any number of times.

This file is the readable version: :func:`conv2d_simple`, :func:`max_pool2d_simple` and
:func:`avg_pool2d` are compositions of im2col and ordinary operations. :func:`conv2d` and
:func:`max_pool2d` check their arguments here and then run the faster kernels of
``conv_fast.py`` (the same numbers: a fused Conv2d over three column layouts, tiled max
pooling), which the tests compare with the compositions below.
"""
from .. import backend
from ..autograd import Function, Tensor, as_tensor
from . import conv_fast  # the kernels conv2d and max_pool2d run: the same numbers, faster
from .math import matmul, sum
from .shape import reshape
from .utils import check_float, int_pair


# -- im2col / col2im on arrays: kh·kw strided copies (a loop over kernel offsets, never over
# -- images or pixels) ---------------------------------------------------------------------------
def _window(i, j, out_hw, stride):
    """The slice of the padded image x_pad[n, c] that kernel offset (i, j) sees, for every
    output pixel (p, q): rows s_h·p + i, columns s_w·q + j."""
    (OH, OW), (sh, sw) = out_hw, stride
    return (slice(None), slice(None), slice(i, i + sh * (OH - 1) + 1, sh),
            slice(j, j + sw * (OW - 1) + 1, sw))


def im2col_array(x, kernel, stride, padding):
    """Columns (N, C·kh·kw, OH·OW) of the windows of ``x`` (N, C, H, W).
    (``conv_fast.im2col_array`` builds the same numbers in two faster batch layouts.)"""
    N, C, H, W = x.shape
    (kh, kw), (ph, pw) = kernel, padding
    OH, OW = _out_size("im2col", (H, W), kernel, stride, padding)
    xp = backend.get_array_module(x)
    x_pad = x
    if ph or pw:                                  # zeros around every image
        x_pad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
        x_pad[:, :, ph:ph + H, pw:pw + W] = x
    col = xp.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            col[:, :, i, j] = x_pad[_window(i, j, (OH, OW), stride)]
    return col.reshape(N, C * kh * kw, OH * OW)


def col2im_array(col, x_shape, kernel, stride, padding):
    """The adjoint of :func:`im2col_array`: every column entry added back to its pixel."""
    N, C, H, W = x_shape
    (kh, kw), (ph, pw) = kernel, padding
    OH, OW = _out_size("col2im", (H, W), kernel, stride, padding)
    _check_columns(col.shape, x_shape, kernel, (N, C * kh * kw, OH * OW))
    xp = backend.get_array_module(col)
    col = col.reshape(N, C, kh, kw, OH, OW)
    x_pad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            x_pad[_window(i, j, (OH, OW), stride)] += col[:, :, i, j]
    return xp.ascontiguousarray(x_pad[:, :, ph:ph + H, pw:pw + W])


# -- im2col / col2im: each the other's backward -------------------------------------------------
class Im2col(Function):
    """col[n, (c,i,j), (p,q)] = x_pad[n, c, s_h·p + i, s_w·q + j];
    backward: col2im (its adjoint)."""

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x):
        _check_image("im2col", x.shape)
        self.x_shape = x.shape
        return im2col_array(x, self.kernel, self.stride, self.padding)

    def backward(self, gcol):
        return Col2im(self.x_shape, self.kernel, self.stride, self.padding)(gcol)


class Col2im(Function):
    """x[n, c, h, w] = Σ of the column entries copied from pixel (h, w);  backward: im2col."""

    def __init__(self, x_shape, kernel, stride, padding):
        self.x_shape, self.kernel, self.stride, self.padding = x_shape, kernel, stride, padding

    def forward(self, col):
        return col2im_array(col, self.x_shape, self.kernel, self.stride, self.padding)

    def backward(self, gx):
        return Im2col(self.kernel, self.stride, self.padding)(gx)


def im2col(x, kernel_size, stride=1, padding=0):
    """Columns (N, C·kh·kw, OH·OW) of the windows of ``x`` (N, C, H, W)."""
    return Im2col(int_pair(kernel_size, "kernel_size", "im2col", 1),
                  int_pair(stride, "stride", "im2col", 1),
                  int_pair(padding, "padding", "im2col", 0))(x)


def col2im(col, input_shape, kernel_size, stride=1, padding=0):
    """The adjoint of :func:`im2col`: adds columns (N, C·kh·kw, OH·OW) back into ``input_shape``."""
    input_shape = tuple(int(s) for s in input_shape)
    _check_image("col2im", input_shape)
    return Col2im(input_shape, int_pair(kernel_size, "kernel_size", "col2im", 1),
                  int_pair(stride, "stride", "col2im", 1),
                  int_pair(padding, "padding", "col2im", 0))(col)


# -- convolution ---------------------------------------------------------------------------------
def conv2d_simple(x, W, b=None, stride=1, padding=0):
    """The convolution composed from differentiable ops: im2col, reshape, matmul, add —
    y[n] = W₂ · im2col(x)[n] + b. Its backward is the chain rule through those steps:

        ∂L/∂W₂ = Σ_n ∂L/∂Y[n] · col[n]ᵀ,   ∂L/∂b = Σ_{n,p} ∂L/∂Y[n, :, p],
        ∂L/∂x  = col2im(W₂ᵀ · ∂L/∂Y).

    The readable definition, and the test oracle of :func:`conv2d`, which computes the same
    with the fused ``conv_fast.Conv2d`` (faster: batch-wide column layouts, the forward's
    columns reused for ∂L/∂W, and no ∂L/∂x for input images)."""
    x, W, b, stride, padding, (OH, OW) = check_conv(x, W, b, stride, padding)
    N, C_out = x.shape[0], W.shape[0]
    col = im2col(x, W.shape[2:], stride, padding)                         # (N, K, P)
    y = matmul(reshape(W, (C_out, col.shape[1])), col)                    # (N, C_out, P)
    if b is not None:
        y = y + reshape(b, (C_out, 1))
    return reshape(y, (N, C_out, OH, OW))


def conv2d(x, W, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation, as in PyTorch) of ``x`` (N, C_in, H, W) with
    ``W`` (C_out, C_in, kh, kw) plus ``b`` (C_out,); ``stride``/``padding`` int or pair.

    The numbers of :func:`conv2d_simple`, computed by the fused ``conv_fast.Conv2d``."""
    x, W, b, stride, padding, _ = check_conv(x, W, b, stride, padding)
    return conv_fast.conv2d(x, W, b, stride, padding)


# -- pooling -------------------------------------------------------------------------------------
def max_pool2d_simple(x, kernel_size, stride=None):
    """Max over kh×kw windows composed from differentiable ops, for any stride: im2col columns
    (N, C, kh·kw, OH·OW), times a 0/1 constant picking each window's first maximum, summed.
    The readable definition, the general path of :func:`max_pool2d` and its test oracle (for
    non-overlapping windows :func:`max_pool2d` runs the faster ``conv_fast.MaxPool2dTiled``)."""
    x, kernel, stride, (OH, OW) = check_pool("max_pool2d", x, kernel_size, stride)
    N, C = x.shape[:2]
    kh, kw = kernel
    col = reshape(im2col(x, kernel, stride), (N, C, kh * kw, OH * OW))
    xp = backend.get_array_module(x)
    first = col.data.argmax(axis=2)[:, :, None, :]
    pick = Tensor((xp.arange(kh * kw).reshape(1, 1, -1, 1) == first).astype(x.dtype))
    return reshape(sum(col * pick, axis=2), (N, C, OH, OW))


def max_pool2d(x, kernel_size, stride=None):
    """Max over kh×kw windows of ``x`` (N, C, H, W) every ``stride`` pixels (default: the
    kernel size, as PyTorch); windows that would run past the edge are dropped (floor mode).

    Ties: the gradient goes to the first maximum of each window (row-major), as in PyTorch.
    The numbers of :func:`max_pool2d_simple`; non-overlapping windows (stride = kernel) run
    the faster ``conv_fast.MaxPool2dTiled``."""
    x, kernel, stride, _ = check_pool("max_pool2d", x, kernel_size, stride)
    if stride == kernel:
        return conv_fast.max_pool2d_tiled(x, kernel)
    return max_pool2d_simple(x, kernel, stride)


def avg_pool2d(x, kernel_size, stride=None):
    """Mean over kh×kw windows of ``x`` (N, C, H, W); stride defaults to the kernel size;
    floor mode. A linear map: its backward spreads gy/(kh·kw) back over each window."""
    x, kernel, stride, (OH, OW) = check_pool("avg_pool2d", x, kernel_size, stride)
    N, C = x.shape[:2]
    kh, kw = kernel
    col = reshape(im2col(x, kernel, stride), (N, C, kh * kw, OH * OW))
    return reshape(sum(col, axis=2) * (1.0 / (kh * kw)), (N, C, OH, OW))


# -- argument checks ------------------------------------------------------------------------------
def _out_size(op, in_hw, kernel, stride, padding):
    """(OH, OW) = ⌊(H + 2p − k) / s⌋ + 1, or an error when the kernel does not fit."""
    (H, W), (kh, kw), (sh, sw), (ph, pw) = in_hw, kernel, stride, padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    if kh > Hp or kw > Wp:
        raise ValueError(f"{op}: kernel {kh}x{kw} is larger than the padded input {Hp}x{Wp} "
                         f"(input {H}x{W}, padding {ph}x{pw})")
    return (Hp - kh) // sh + 1, (Wp - kw) // sw + 1


def _check_image(op, shape):
    if len(shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {tuple(shape)}")


def _check_columns(col_shape, x_shape, kernel, expected):
    if tuple(col_shape) != expected:
        raise ValueError(f"col2im: columns of shape {tuple(col_shape)} do not match input shape "
                         f"{tuple(x_shape)} with kernel {kernel[0]}x{kernel[1]} (expected "
                         f"{expected})")


def check_conv(x, W, b, stride, padding):
    """Tensors, pairs and the output size (OH, OW) of a convolution, or a clear error."""
    x, W = as_tensor(x), as_tensor(W)
    b = None if b is None else as_tensor(b, like=W.data)
    stride = int_pair(stride, "stride", "conv2d", 1)
    padding = int_pair(padding, "padding", "conv2d", 0)
    if x.ndim != 4:
        raise ValueError(f"conv2d: input must be 4-D (N, C, H, W), got shape {x.shape}")
    if W.ndim != 4:
        raise ValueError(f"conv2d: weight must be 4-D (C_out, C_in, kh, kw), got shape "
                         f"{W.shape}")
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels but the weight expects "
                         f"{W.shape[1]} (input shape {x.shape}, weight shape {W.shape})")
    if b is not None and b.shape != (W.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({W.shape[0]},) for weight shape "
                         f"{W.shape}, got {b.shape}")
    out_hw = _out_size("conv2d", x.shape[2:], W.shape[2:], stride, padding)
    check_float("conv2d", x)
    return x, W, b, stride, padding, out_hw


def check_pool(op, x, kernel_size, stride):
    x = as_tensor(x)
    kernel = int_pair(kernel_size, "kernel_size", op, 1)
    stride = kernel if stride is None else int_pair(stride, "stride", op, 1)
    _check_image(op, x.shape)
    out_hw = _out_size(op, x.shape[2:], kernel, stride, (0, 0))
    return x, kernel, stride, out_hw
