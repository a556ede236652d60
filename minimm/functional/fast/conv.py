"""Fast convolution and max pooling: NCHW tensors whose memory is laid out (C, H, W, N).

The readable kernels (:mod:`minimm.functional.conv`) keep images NCHW and pay for it in
layout changes: each convolution transposes its columns or its output, and im2col copies
rows as short as the image is wide (4 pixels in the last layer). Here every activation of
the convolution stack keeps one memory layout, **CHWN** — channels, rows, columns, and the
batch index fastest — while its shape stays the public (N, C, H, W): the array handed on is
the NCHW *view* ``a.transpose(3, 0, 1, 2)`` of a C-contiguous (C, H, W, N) array. Any
operation accepts such a view (ReLU and batch norm keep the layout of their input); the
kernels below take it without a copy. In this layout

* the column matrix of a k×k convolution, col[(c, i, j), (p, q, n)] = x[c, p+i, q+j, n], is
  kh·kw slice copies whose rows are OW·N numbers long (not OW): bandwidth-bound copies;
* Y = W₂ · col (C_out, OH·OW·N) *is* the output in CHWN: no transpose after the product;
* the bias rides in the product: a row of ones appended to col and b appended to W₂ as a
  last column (Y = [W₂ b] · [col; 1]), and ∂L/∂b falls out of ∂L/∂[W₂ b] = ∂L/∂Y · [col; 1]ᵀ
  — no extra pass over Y for the bias or for its gradient;
* 2×2 max pooling reads four strided views with unit inner stride (the batch).

The formulas are those of :class:`minimm.functional.conv.Conv2d`:

    Y = W₂ col + b,   ∂L/∂W₂ = ∂L/∂Y colᵀ,   ∂L/∂b = ∂L/∂Y 1,   ∂L/∂x = col2im(W₂ᵀ ∂L/∂Y).

Padding costs no padded copy: for each kernel offset only the output rows and columns whose
source pixel lies inside the image are copied (and added back by col2im); the rest of that
offset's column block is zero. A differentiable backward (``create_graph=True``) is taken
from the readable composed twin, :func:`minimm.functional.conv.conv2d_simple`.
"""
from ... import backend
from ...autograd import Function, Tensor, as_tensor, enable_grad, grad, is_grad_enabled
from ..conv import _check_conv, _pair, _pool_args, conv2d_simple, max_pool2d_simple


# -- the layout ------------------------------------------------------------------------------
def to_chwn(a):
    """The C-contiguous (C, H, W, N) array holding the NCHW-shaped array ``a``: a view when
    ``a`` is already laid out that way (a tensor from this module), else one copy."""
    t = a.transpose(1, 2, 3, 0)
    return t if t.flags.c_contiguous else backend.get_array_module(a).ascontiguousarray(t)


def nchw(a):
    """The NCHW view (N, C, H, W) of a (C, H, W, N) array (no copy)."""
    return a.transpose(3, 0, 1, 2)


def _span(out_len, in_len, k, s, p):
    """For one kernel offset k along one axis: output indices [o0, o1) whose source index
    o·s + k − p lies in [0, in_len), and the first source index i0 (o1 ≤ o0: none)."""
    o0 = max(0, -((k - p) // s))                       # ⌈(p − k)/s⌉, at least 0
    o1 = min(out_len, (in_len - 1 + p - k) // s + 1)
    return o0, o1, o0 * s + k - p


def _offsets(x_hw, out_hw, kernel, stride, padding):
    """Per kernel offset (i, j): (i, j, rows o0:o1, cols q0:q1, source slices)."""
    (H, W), (OH, OW), (kh, kw), (sh, sw), (ph, pw) = x_hw, out_hw, kernel, stride, padding
    for i in range(kh):
        o0, o1, r0 = _span(OH, H, i, sh, ph)
        for j in range(kw):
            q0, q1, c0 = _span(OW, W, j, sw, pw)
            if o1 <= o0 or q1 <= q0:
                yield i, j, None, None, None, None
                continue
            rows = slice(r0, r0 + sh * (o1 - o0 - 1) + 1, sh)
            cols = slice(c0, c0 + sw * (q1 - q0 - 1) + 1, sw)
            yield i, j, slice(o0, o1), slice(q0, q1), rows, cols


def im2col_chwn(x, kernel, stride, padding, out_hw, ones_row=False):
    """col (C·kh·kw [+ 1], OH·OW·N) from x (C, H, W, N): row (c, i, j) holds
    x[c, s_h·p + i − p_h, s_w·q + j − p_w, n] at column (p, q, n) (0 outside the image);
    with ``ones_row`` a last row of ones (for the bias)."""
    xp = backend.get_array_module(x)
    C, H, W, N = x.shape
    (kh, kw), (OH, OW) = kernel, out_hw
    K = C * kh * kw
    col = xp.empty((K + int(ones_row), OH, OW, N), dtype=x.dtype)
    col6 = col[:K].reshape(C, kh, kw, OH, OW, N)
    for i, j, o, q, rows, cols in _offsets((H, W), out_hw, kernel, stride, padding):
        block = col6[:, i, j]
        if o is None:
            block[...] = 0
            continue
        # zero the border strips whose source pixel is padding, copy the rest
        if o.start > 0:
            block[:, :o.start] = 0
        if o.stop < OH:
            block[:, o.stop:] = 0
        if q.start > 0:
            block[:, o, :q.start] = 0
        if q.stop < OW:
            block[:, o, q.stop:] = 0
        block[:, o, q] = x[:, rows, cols]
    if ones_row:
        col[K] = 1
    return col.reshape(K + int(ones_row), OH * OW * N)


def col2im_chwn(dcol, x_shape, kernel, stride, padding, out_hw):
    """The adjoint of :func:`im2col_chwn` (without the ones row): every entry of dcol
    (C·kh·kw, OH·OW·N) added back to the pixel it was copied from -> (C, H, W, N)."""
    xp = backend.get_array_module(dcol)
    C, H, W, N = x_shape
    (kh, kw), (OH, OW) = kernel, out_hw
    gx = xp.zeros(x_shape, dtype=dcol.dtype)
    d6 = dcol.reshape(C, kh, kw, OH, OW, N)
    for i, j, o, q, rows, cols in _offsets((H, W), out_hw, kernel, stride, padding):
        if o is not None:
            gx[:, rows, cols] += d6[:, i, j, o, q]
    return gx


# -- convolution ---------------------------------------------------------------------------------
class Conv2dCHWN(Function):
    """y[n, o, p, q] = Σ_{c,i,j} W[o, c, i, j] · x_pad[n, c, s_h·p + i, s_w·q + j] + b[o],
    computed in the CHWN layout (module docstring); the result is an NCHW view of CHWN
    memory. Same numbers as :class:`minimm.functional.conv.Conv2d` up to rounding."""

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, W, b=None):
        OH, OW = _check_conv(x.shape, W.shape, None if b is None else b.shape,
                             self.stride, self.padding)
        xp = backend.get_array_module(x)
        C_out, C, kh, kw = W.shape
        xc = to_chwn(x)
        N = xc.shape[3]
        self.out_hw = (OH, OW)
        # a 1×1 convolution of stride 1 without padding needs no columns: x itself is col
        pointwise = (kh, kw) == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
        self.ones, self.pointwise = b is not None and not pointwise, pointwise
        if pointwise:
            col = xc.reshape(C, -1)
        else:
            col = im2col_chwn(xc, (kh, kw), self.stride, self.padding, (OH, OW), self.ones)
        W2 = W.reshape(C_out, -1)
        if self.ones:
            W2 = xp.concatenate([W2, b.reshape(C_out, 1)], axis=1)
        y = W2 @ col                                           # (C_out, OH·OW·N): CHWN
        if b is not None and not self.ones:
            y += b.reshape(C_out, 1)
        wants_w = len(self.needs_input_grad) > 1 and any(self.needs_input_grad[1:])
        self.col = col if wants_w else None       # ∂L/∂W needs the columns: keep them
        return nchw(y.reshape(C_out, OH, OW, N))

    def backward(self, gy):
        if is_grad_enabled():   # create_graph: differentiate the composed twin instead
            return _composed_backward(self, lambda x, W, b=None: conv2d_simple(
                x, W, b, self.stride, self.padding), gy)
        x, W = self.inputs[:2]
        xp = backend.get_array_module(gy.data)
        C_out = W.shape[0]
        K = W.size // C_out
        g = to_chwn(gy.data).reshape(C_out, -1)                # ∂L/∂Y (C_out, OH·OW·N)
        has_b = len(self.inputs) == 3
        gx = gW = gb = None
        if self.col is not None:
            dWb = g @ self.col.T                               # ∂L/∂[W₂ b] = ∂L/∂Y [col; 1]ᵀ
            if self.needs_input_grad[1]:
                gW = Tensor(xp.ascontiguousarray(dWb[:, :K]).reshape(W.shape))
            if has_b and self.needs_input_grad[2]:
                gb = Tensor(dWb[:, K].copy() if self.ones else
                            (g @ xp.ones((g.shape[1], 1), dtype=g.dtype)).reshape(C_out))
        if self.needs_input_grad[0]:
            dcol = W.data.reshape(C_out, -1).T @ g            # W₂ᵀ ∂L/∂Y
            C, H, Wd = x.shape[1:]
            if self.pointwise:                                 # col was x: col2im is a reshape
                gxc = dcol.reshape(C, H, Wd, x.shape[0])
            else:
                gxc = col2im_chwn(dcol, (C, H, Wd, x.shape[0]), W.shape[2:], self.stride,
                                  self.padding, self.out_hw)
            gx = Tensor(nchw(gxc))
        self.col = None
        return (gx, gW, gb) if has_b else (gx, gW)


def _composed_backward(fn, composed, gy):
    """Gradients of ``fn``'s inputs through the composed twin's graph (differentiable)."""
    with enable_grad():
        y = composed(*fn.inputs)
    wanted = [x for x, need in zip(fn.inputs, fn.needs_input_grad) if need]
    gs = iter(grad(y, wanted, gy, create_graph=True))
    return tuple(next(gs) if need else None for need in fn.needs_input_grad)


def conv2d(x, W, b=None, stride=1, padding=0):
    """:func:`minimm.functional.conv2d` in the CHWN layout: same arguments, same numbers;
    the result is an NCHW view of CHWN memory."""
    stride = _pair(stride, "stride", "conv2d", 1)
    padding = _pair(padding, "padding", "conv2d", 0)
    args = (x, W) if b is None else (x, W, b)
    return Conv2dCHWN(stride, padding)(*args)


# -- max pooling ---------------------------------------------------------------------------------
def _tiles_chwn(xc, kernel, out_hw):
    """Views xc[:, i::kh, j::kw, :] cropped to the tiled area, offsets in row-major order."""
    (kh, kw), (OH, OW) = kernel, out_hw
    return [xc[:, i:OH * kh:kh, j:OW * kw:kw] for i in range(kh) for j in range(kw)]


class MaxPool2dCHWN(Function):
    """y[n, c, p, q] = max of x over the k×k tile (p, q) (stride = kernel, floor mode), in the
    CHWN layout. The gradient goes to the first maximum of each window in row-major order,
    as :class:`minimm.functional.conv.MaxPool2dTiled` and PyTorch; the masks are rebuilt in
    the backward from x and y (nothing but the output is kept)."""

    def __init__(self, kernel):
        self.kernel = kernel

    def forward(self, x):
        xp = backend.get_array_module(x)
        kh, kw = self.kernel
        self.out_hw = (x.shape[2] // kh, x.shape[3] // kw)
        xc = x.transpose(1, 2, 3, 0)               # any strides: the tiles are views anyway
        views = _tiles_chwn(xc, self.kernel, self.out_hw)
        C, N = xc.shape[0], xc.shape[3]
        y = xp.empty((C,) + self.out_hw + (N,), dtype=x.dtype)
        if len(views) == 1:
            y[...] = views[0]
        else:
            xp.maximum(views[0], views[1], out=y)
        for v in views[2:]:
            xp.maximum(y, v, out=y)
        return nchw(y)

    def backward(self, gy):
        if is_grad_enabled():
            k = self.kernel
            return _composed_backward(self, lambda x: max_pool2d_simple(x, k), gy)
        x, = self.inputs
        y, = self.outputs()
        xp = backend.get_array_module(gy.data)
        xc, yc = x.data.transpose(1, 2, 3, 0), y.data.transpose(1, 2, 3, 0)
        g = gy.data.transpose(1, 2, 3, 0)
        C, H, W, N = xc.shape
        tiled = (self.out_hw[0] * self.kernel[0], self.out_hw[1] * self.kernel[1]) == (H, W)
        gx = (xp.empty if tiled else xp.zeros)((C, H, W, N), dtype=gy.dtype)
        views = _tiles_chwn(xc, self.kernel, self.out_hw)
        targets = _tiles_chwn(gx, self.kernel, self.out_hw)
        taken = None
        for k, (v, t) in enumerate(zip(views, targets)):
            if k == len(views) - 1:       # the last offset: where no earlier one was picked
                first = ~taken if taken is not None else xp.ones(yc.shape, dtype=bool)
            else:
                first = v == yc
                if taken is None:
                    taken = first.copy()
                else:
                    xp.greater(first, taken, out=first)   # a maximum and no earlier one
                    taken |= first
            xp.multiply(g, first, out=t)
        return Tensor(nchw(gx))


def max_pool2d(x, kernel_size, stride=None):
    """:func:`minimm.functional.max_pool2d` in the CHWN layout when the windows tile the
    image (stride = kernel); other strides go to the readable im2col path."""
    x = as_tensor(x)
    kernel, stride, _ = _pool_args("max_pool2d", x, kernel_size, stride)
    if stride != kernel:
        return max_pool2d_simple(x, kernel, stride)
    return MaxPool2dCHWN(kernel)(x)
