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
from ..activations import relu
from ..conv import check_conv, check_pool, conv2d_simple, max_pool2d_simple
from ..utils import int_pair


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


def _offsets(x_hw, out_hw, kernel, stride, padding, region=None):
    """Per kernel offset (i, j), for the output pixels of ``region`` = (p0, p1, q0, q1)
    (default all): (i, j, rows, cols of the region that see the image — relative to it —,
    and the source slices), or Nones when the offset sees only padding there."""
    (H, W), (OH, OW), (kh, kw), (sh, sw), (ph, pw) = x_hw, out_hw, kernel, stride, padding
    p0, p1, q0, q1 = region if region is not None else (0, OH, 0, OW)
    for i in range(kh):
        o0, o1, _ = _span(OH, H, i, sh, ph)
        o0, o1 = max(o0, p0), min(o1, p1)
        for j in range(kw):
            u0, u1, _ = _span(OW, W, j, sw, pw)
            u0, u1 = max(u0, q0), min(u1, q1)
            if o1 <= o0 or u1 <= u0:
                yield i, j, None, None, None, None
                continue
            r0, c0 = o0 * sh + i - ph, u0 * sw + j - pw
            rows = slice(r0, r0 + sh * (o1 - o0 - 1) + 1, sh)
            cols = slice(c0, c0 + sw * (u1 - u0 - 1) + 1, sw)
            yield i, j, slice(o0 - p0, o1 - p0), slice(u0 - q0, u1 - q0), rows, cols


def im2col_chwn(x, kernel, stride, padding, out_hw, ones_row=False, region=None):
    """col (C·kh·kw [+ 1], P·Q·N) from x (C, H, W, N) for the output pixels of ``region``
    (p0, p1, q0, q1) — P × Q of them, default all: row (c, i, j) holds
    x[c, s_h·p + i − p_h, s_w·q + j − p_w, n] at column (p, q, n) (0 outside the image);
    with ``ones_row`` a last row of ones (for the bias)."""
    xp = backend.get_array_module(x)
    C, H, W, N = x.shape
    (kh, kw), (OH, OW) = kernel, out_hw
    p0, p1, q0, q1 = region if region is not None else (0, OH, 0, OW)
    P, Q = p1 - p0, q1 - q0
    K = C * kh * kw
    col = xp.empty((K + int(ones_row), P, Q, N), dtype=x.dtype)
    col6 = col[:K].reshape(C, kh, kw, P, Q, N)
    for i, j, o, q, rows, cols in _offsets((H, W), out_hw, kernel, stride, padding, region):
        block = col6[:, i, j]
        if o is None:
            block[...] = 0
            continue
        # zero the border strips whose source pixel is padding, copy the rest
        if o.start > 0:
            block[:, :o.start] = 0
        if o.stop < P:
            block[:, o.stop:] = 0
        if q.start > 0:
            block[:, o, :q.start] = 0
        if q.stop < Q:
            block[:, o, q.stop:] = 0
        block[:, o, q] = x[:, rows, cols]
    if ones_row:
        col[K] = 1
    return col.reshape(K + int(ones_row), P * Q * N)


def col2im_chwn(dcol, x_shape, kernel, stride, padding, out_hw, out=None, region=None):
    """The adjoint of :func:`im2col_chwn` (without the ones row): every entry of dcol
    (C·kh·kw, P·Q·N) added back to the pixel it was copied from -> (C, H, W, N)
    (added into ``out`` when given)."""
    xp = backend.get_array_module(dcol)
    C, H, W, N = x_shape
    (kh, kw), (OH, OW) = kernel, out_hw
    p0, p1, q0, q1 = region if region is not None else (0, OH, 0, OW)
    gx = xp.zeros(x_shape, dtype=dcol.dtype) if out is None else out
    d6 = dcol.reshape(C, kh, kw, p1 - p0, q1 - q0, N)
    for i, j, o, q, rows, cols in _offsets((H, W), out_hw, kernel, stride, padding, region):
        if o is not None:
            gx[:, rows, cols] += d6[:, i, j, o, q]
    return gx


def blocks(out_hw, pixel_bytes, budget, align=(1, 1)):
    """Rectangles (p0, p1, q0, q1) tiling the OH × OW output, each about ``budget`` bytes of
    columns (``pixel_bytes`` per output pixel): whole rows when a row fits, else parts of a
    row; with ``align`` (kh, kw) the rectangles are made of whole pooling windows."""
    (OH, OW), (ah, aw) = out_hw, align
    pixels = max(1, budget // max(1, pixel_bytes))
    if pixels >= OW * ah:                        # several (aligned) whole rows
        rows = max(ah, pixels // OW // ah * ah)
        return [(p, min(OH, p + rows), 0, OW) for p in range(0, OH, rows)]
    width = max(aw, pixels // ah // aw * aw)     # one band of ah rows, part of its width
    return [(p, min(OH, p + ah), q, min(OW, q + width))
            for p in range(0, OH, ah) for q in range(0, OW, width)]


# -- convolution ---------------------------------------------------------------------------------
# The column matrix is built and used BLOCK_BYTES at a time — a rectangle of output pixels
# whose columns fit in the cache — and never whole: its block is copied, multiplied and
# dropped while it is still in the cache, and the backward builds it again, block by block,
# for ∂L/∂W (and adds ∂L/∂col back the same way). When the whole matrix is one block, the
# forward's is kept for the backward instead.
BLOCK_BYTES = 2 * 2 ** 20


# The matrix products, named so that a profiler (benchmarks/phases.py) can time them
def conv_forward_matmul(W2, col):
    """Y = W₂ col."""
    return W2 @ col


def conv_backward_dW(g, col):
    """∂L/∂W₂ = ∂L/∂Y colᵀ."""
    return g @ col.T


def conv_backward_dcol(W2, g):
    """∂L/∂col = W₂ᵀ ∂L/∂Y."""
    return W2.T @ g


class _ConvCore:
    """The array work of a CHWN convolution, shared by :class:`Conv2dCHWN` and
    :class:`Conv2dReLUMaxPool`, over the output rectangles ``regions`` (all of the output by
    default, or the part a pooling uses): ``forward`` hands each rectangle's Y (C_out, P, Q, N)
    to ``sink``; ``backward`` takes each rectangle's ∂L/∂Y from ``grad`` and returns the
    gradients that are needed."""

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def setup(self, x_shape, W_shape, has_b, out_hw, itemsize, used_hw=None, align=(1, 1)):
        C_out, C, kh, kw = W_shape
        self.out_hw, self.kernel, self.x_shape = out_hw, (kh, kw), x_shape
        # a 1×1 convolution of stride 1 without padding needs no columns: x itself is col
        self.pointwise = (kh, kw) == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
        self.ones = has_b and not self.pointwise
        K = C * kh * kw + int(self.ones)
        used = out_hw if used_hw is None else used_hw
        if self.pointwise:
            self.regions = [(0, used[0], 0, used[1])]
        else:
            self.regions = blocks(used, K * x_shape[3] * itemsize, BLOCK_BYTES, align)
        self.col = None

    def columns(self, xc, region):
        return im2col_chwn(xc, self.kernel, self.stride, self.padding, self.out_hw, self.ones,
                           region)

    def weights(self, W, b):
        W2 = W.reshape(W.shape[0], -1)
        if self.ones:
            W2 = backend.get_array_module(W).concatenate([W2, b.reshape(-1, 1)], axis=1)
        return W2

    def forward(self, xc, W, b, wants_w, sink):
        C_out = W.shape[0]
        W2 = self.weights(W, b)
        N = xc.shape[3]
        if self.pointwise:
            y = conv_forward_matmul(W2, xc.reshape(xc.shape[0], -1))
            if b is not None:
                y += b.reshape(C_out, 1)
            self.col = xc.reshape(xc.shape[0], -1) if wants_w else None
            p1, q1 = self.regions[0][1], self.regions[0][3]
            sink(self.regions[0], y.reshape(C_out, p1, q1, N))
            return
        for region in self.regions:
            col = self.columns(xc, region)
            Y = conv_forward_matmul(W2, col)                  # (C_out, P·Q·N): CHWN
            if b is not None and not self.ones:
                Y += b.reshape(C_out, 1)
            sink(region, Y.reshape(C_out, region[1] - region[0], region[3] - region[2], N))
        # one block: ∂L/∂W needs exactly these columns, keep them
        self.col = col if wants_w and len(self.regions) == 1 else None

    def backward(self, grad, x_data, W, needs_x, needs_w, needs_b):
        """grad(region) -> ∂L/∂Y of that rectangle, (C_out, P·Q·N) contiguous. Returns
        (∂L/∂x (C, H, W, N) or None, ∂L/∂W, ∂L/∂b)."""
        xp = backend.get_array_module(W)
        C_out = W.shape[0]
        K = W.size // C_out
        W2 = W.reshape(C_out, -1)
        C, H, Wd, N = self.x_shape
        xc = to_chwn(x_data) if (needs_w or needs_b) and self.col is None else None
        dWb = gsum = None
        gx = None
        if needs_x:
            gx = xp.zeros((C, H, Wd, N), dtype=W.dtype) if not self.pointwise else None
        for region in self.regions:
            g = grad(region)
            if needs_w or needs_b:
                col = self.col if self.col is not None else (
                    xc.reshape(C, -1) if self.pointwise else self.columns(xc, region))
                part = conv_backward_dW(g, col)               # ∂L/∂[W₂ b] = ∂L/∂Y [col; 1]ᵀ
                dWb = part if dWb is None else dWb.__iadd__(part)
                if needs_b and not self.ones:                 # Σ over pixels: ∂L/∂Y 1
                    part = g @ xp.ones((g.shape[1], 1), dtype=g.dtype)
                    gsum = part if gsum is None else gsum.__iadd__(part)
            if needs_x:
                dcol = conv_backward_dcol(W2, g)             # W₂ᵀ ∂L/∂Y
                if self.pointwise:                           # col was x: col2im is a reshape
                    gx = dcol.reshape(C, H, Wd, N)
                else:
                    col2im_chwn(dcol, (C, H, Wd, N), self.kernel, self.stride, self.padding,
                                self.out_hw, out=gx, region=region)
        self.col = None
        gW = gb = None
        if needs_w:
            gW = xp.ascontiguousarray(dWb[:, :K]).reshape(W.shape)
        if needs_b:
            gb = dWb[:, K].copy() if self.ones else gsum.reshape(C_out)
        return gx, gW, gb


# 3×3 convolutions of stride 1 with at least this many input channels go through Winograd's
# F(2×2, 3×3) (:mod:`.winograd`): 2.25× fewer multiplications; below it (the first layer's
# three colours) the transforms cost more than they save. None: never.
WINOGRAD_MIN_CHANNELS = 16


def _core(stride, padding, W_shape, align=(1, 1)):
    """The convolution's array engine: Winograd where it applies, else im2col blocks."""
    if (WINOGRAD_MIN_CHANNELS is not None and tuple(W_shape[2:]) == (3, 3)
            and stride == (1, 1) and W_shape[1] >= WINOGRAD_MIN_CHANNELS
            and tuple(align) in ((1, 1), (2, 2))):
        from .winograd import WinogradCore
        return WinogradCore(padding)
    return _ConvCore(stride, padding)


class Conv2dCHWN(Function):
    """y[n, o, p, q] = Σ_{c,i,j} W[o, c, i, j] · x_pad[n, c, s_h·p + i, s_w·q + j] + b[o],
    computed in the CHWN layout (module docstring); the result is an NCHW view of CHWN
    memory. Same numbers as :class:`minimm.functional.conv.Conv2d` up to rounding."""

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, W, b=None):
        OH, OW = check_conv(x, W, b, self.stride, self.padding)[-1]
        xp = backend.get_array_module(x)
        xc = to_chwn(x)
        C_out, N = W.shape[0], xc.shape[3]
        self.core = _core(self.stride, self.padding, W.shape)
        self.core.setup(xc.shape, W.shape, b is not None, (OH, OW), x.dtype.itemsize)
        wants_w = len(self.needs_input_grad) > 1 and any(self.needs_input_grad[1:])
        y = xp.empty((C_out, OH, OW, N), dtype=x.dtype)

        def sink(region, Y):
            p0, p1, q0, q1 = region
            y[:, p0:p1, q0:q1] = Y
        self.core.forward(xc, W, b, wants_w, sink)
        return nchw(y)

    def backward(self, gy):
        if is_grad_enabled():   # create_graph: differentiate the composed twin instead
            return _composed_backward(self, lambda x, W, b=None: conv2d_simple(
                x, W, b, self.stride, self.padding), gy)
        x, W = self.inputs[:2]
        has_b = len(self.inputs) == 3
        need = self.needs_input_grad
        g4 = to_chwn(gy.data)                                   # ∂L/∂Y (C_out, OH, OW, N)
        xp = backend.get_array_module(g4)
        C_out = W.shape[0]

        def grad(region):
            p0, p1, q0, q1 = region
            return xp.ascontiguousarray(g4[:, p0:p1, q0:q1]).reshape(C_out, -1)
        gx, gW, gb = self.core.backward(grad, x.data, W.data, need[0], need[1],
                                        has_b and need[2])
        grads = [None if gx is None else Tensor(nchw(gx)), None if gW is None else Tensor(gW)]
        if has_b:
            grads.append(None if gb is None else Tensor(gb))
        return tuple(grads)


def pool_forward(Y, kernel, out_hw):
    """The window maxima y (C, PH, PW, N) of Y (C, OH, OW, N) and, per window, the index of
    its first maximum (uint8; the last offset where none equals the maximum — NaN)."""
    xp = backend.get_array_module(Y)
    views = _tiles_chwn(Y, kernel, out_hw)
    y = xp.empty((Y.shape[0],) + tuple(out_hw) + (Y.shape[3],), dtype=Y.dtype)
    if len(views) == 1:
        y[...] = views[0]
    else:
        xp.maximum(views[0], views[1], out=y)
    for v in views[2:]:
        xp.maximum(y, v, out=y)
    first = xp.full(y.shape, len(views) - 1, dtype=xp.uint8)
    for k in range(len(views) - 2, -1, -1):        # the smallest k that equals the maximum
        xp.copyto(first, xp.uint8(k), where=views[k] == y)
    return y, first


def pool_backward(g, first, kernel, Y_shape):
    """∂L/∂Y (C, OH, OW, N): ∂L/∂y (C, PH, PW, N) to each window's first maximum; 0
    elsewhere."""
    xp = backend.get_array_module(g)
    tiled = tuple(o * k for o, k in zip(g.shape[1:3], kernel)) == tuple(Y_shape[1:3])
    gY = (xp.empty if tiled else xp.zeros)(Y_shape, dtype=g.dtype)
    for k, t in enumerate(_tiles_chwn(gY, kernel, g.shape[1:3])):
        xp.multiply(g, first == k, out=t)
    return gY


class Conv2dReLUMaxPool(Function):
    """y = max_pool2d(relu(conv2d(x, W, b)), k): the article's Conv-ReLU-Pool block as one
    Function, in the CHWN layout.

    ReLU and the max commute (ReLU is monotone), so the window maximum is taken on the
    convolution's output and ReLU applied to the k²-times smaller result; the convolution's
    output is dropped as soon as it is pooled. What the backward keeps is the pooled output
    y (ReLU's mask is y > 0) and, per window, which element was the first maximum (one
    uint8 index): the same gradient as the three separate layers and PyTorch,

        ∂L/∂Y[window w, element e] = [e = first argmax of w] · [y_w > 0] · ∂L/∂y_w,

    then the convolution's backward. Windows tile the image (stride = kernel), floor mode.
    """

    def __init__(self, stride, padding, kernel):
        self.stride, self.padding, self.kernel = stride, padding, kernel

    def forward(self, x, W, b=None):
        OH, OW = check_conv(x, W, b, self.stride, self.padding)[-1]
        xp = backend.get_array_module(x)
        (kh, kw), C_out = self.kernel, W.shape[0]
        PH, PW = OH // kh, OW // kw
        if PH < 1 or PW < 1:
            raise ValueError(f"max_pool2d: kernel {kh}x{kw} is larger than the convolution's "
                             f"output {OH}x{OW}")
        xc = to_chwn(x)
        N = xc.shape[3]
        self.core = _core(self.stride, self.padding, W.shape, (kh, kw))
        # only the output pixels that a window uses are computed (floor mode drops the rest)
        self.core.setup(xc.shape, W.shape, b is not None, (OH, OW), x.dtype.itemsize,
                        used_hw=(PH * kh, PW * kw), align=(kh, kw))
        wants_w = len(self.needs_input_grad) > 1 and any(self.needs_input_grad[1:])
        y = xp.empty((C_out, PH, PW, N), dtype=x.dtype)
        first = xp.empty((C_out, PH, PW, N), dtype=xp.uint8)

        def sink(region, Y):                    # pool each rectangle while it is in the cache
            p0, p1, q0, q1 = region
            win = (slice(None), slice(p0 // kh, p1 // kh), slice(q0 // kw, q1 // kw))
            y[win], first[win] = pool_forward(Y, self.kernel, ((p1 - p0) // kh,
                                                               (q1 - q0) // kw))
        self.core.forward(xc, W, b, wants_w, sink)
        self.first = first
        xp.maximum(y, y.dtype.type(0), out=y)                  # ReLU, after the max
        return nchw(y)

    def backward(self, gy):
        if is_grad_enabled():
            k = self.kernel
            return _composed_backward(self, lambda x, W, b=None: max_pool2d_simple(relu(
                conv2d_simple(x, W, b, self.stride, self.padding)), k), gy)
        x, W = self.inputs[:2]
        y, = self.outputs()
        has_b = len(self.inputs) == 3
        need = self.needs_input_grad
        C_out = W.shape[0]
        kh, kw = self.kernel
        N = x.shape[0]
        g = to_chwn(gy.data) * (to_chwn(y.data) > 0)           # through the ReLU
        first = self.first

        def grad(region):                       # ∂L/∂Y of a rectangle: to the first maxima
            p0, p1, q0, q1 = region
            win = (slice(None), slice(p0 // kh, p1 // kh), slice(q0 // kw, q1 // kw))
            return pool_backward(g[win], first[win], self.kernel,
                                 (C_out, p1 - p0, q1 - q0, N)).reshape(C_out, -1)
        gx, gW, gb = self.core.backward(grad, x.data, W.data, need[0], need[1],
                                        has_b and need[2])
        self.first = None
        grads = [None if gx is None else Tensor(nchw(gx)), None if gW is None else Tensor(gW)]
        if has_b:
            grads.append(None if gb is None else Tensor(gb))
        return tuple(grads)


def conv2d_relu_max_pool2d(x, W, b=None, stride=1, padding=0, pool=2):
    """max_pool2d(relu(conv2d(x, W, b, stride, padding)), pool) as one Function
    (:class:`Conv2dReLUMaxPool`): the same numbers, fewer passes and less memory."""
    stride = int_pair(stride, "stride", "conv2d", 1)
    padding = int_pair(padding, "padding", "conv2d", 0)
    kernel = int_pair(pool, "kernel_size", "max_pool2d", 1)
    args = (x, W) if b is None else (x, W, b)
    return Conv2dReLUMaxPool(stride, padding, kernel)(*args)


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
    stride = int_pair(stride, "stride", "conv2d", 1)
    padding = int_pair(padding, "padding", "conv2d", 0)
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
    _, kernel, stride, _ = check_pool("max_pool2d", x, kernel_size, stride)
    if stride != kernel:
        return max_pool2d_simple(x, kernel, stride)
    return MaxPool2dCHWN(kernel)(x)
