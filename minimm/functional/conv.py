"""Convolution and pooling on NCHW images, through im2col / col2im.

im2col copies every kh × kw window of the (zero-padded) input into a column, so that a
convolution becomes one matrix product per image:

    col[n, (c, i, j), (p, q)] = x_pad[n, c, s_h·p + i, s_w·q + j]
    Y[n] = W₂ · col[n] + b,        W₂ = W.reshape(C_out, C·kh·kw)

col2im is the adjoint (transpose) of that linear map: it adds every column entry back to the
pixel it was copied from, so ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩. That is why each is the other's
backward, and why a convolution built on the pair is differentiable any number of times.

Speed: columns are built with kh·kw strided slice copies into one preallocated buffer (a
loop over kernel offsets, never over images or pixels); col2im is kh·kw in-place strided adds
into a padded buffer. :class:`Conv2d` fuses the forward and skips the gradients nobody needs.
"""
from .. import backend
from ..autograd import Function, Tensor, as_tensor, is_grad_enabled
from .math import matmul, sum
from .shape import reshape, swapaxes, transpose


# -- argument checks --------------------------------------------------------------------------
def _pair(value, name, op, minimum):
    """An int or a pair of ints -> a pair of ints, each ≥ ``minimum``."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{op}: {name} must be ≥ {minimum}, got {value!r}")
    return pair


def _check_image(op, shape):
    if len(shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {tuple(shape)}")


def _out_size(op, in_hw, kernel, stride, padding):
    """(OH, OW) = ⌊(H + 2p − k) / s⌋ + 1, or an error when the kernel does not fit."""
    (H, W), (kh, kw), (sh, sw), (ph, pw) = in_hw, kernel, stride, padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    if kh > Hp or kw > Wp:
        raise ValueError(f"{op}: kernel {kh}x{kw} is larger than the padded input {Hp}x{Wp} "
                         f"(input {H}x{W}, padding {ph}x{pw})")
    return (Hp - kh) // sh + 1, (Wp - kw) // sw + 1


# -- the array kernels (no autograd) ------------------------------------------------------------
# Three column layouts, the same numbers in different orders (K = C·kh·kw, P = OH·OW):
#   "nkp" (N, K, P)   one matrix per image; W₂ @ col is NCHW already.
#   "knp" (K, N·P)    one matrix for the batch.
#   "kpn" (K, P·N)    the same, batch index fastest: built from the image transposed to
#                     (C, H, W, N), so each copy and add runs over rows OW·N long instead of
#                     OW — NumPy's strided loops are slow on short rows (4 pixels, say).
# Each is filled by kh·kw strided copies, one per kernel offset.
def _window(i, j, out_hw, stride, lead):
    """The slice of the padded input that kernel offset (i, j) sees, for every output pixel;
    ``lead`` full axes come before the two spatial axes."""
    (OH, OW), (sh, sw) = out_hw, stride
    return (slice(None),) * lead + (slice(i, i + sh * (OH - 1) + 1, sh),
                                    slice(j, j + sw * (OW - 1) + 1, sw))


def _im2col_array(x, kernel, stride, padding, layout="nkp"):
    """Columns of ``x`` (N, C, H, W) in ``layout`` (see above)."""
    N, C, H, W = x.shape
    (kh, kw), (ph, pw) = kernel, padding
    OH, OW = _out_size("im2col", (H, W), kernel, stride, padding)
    xp = backend.get_array_module(x)
    if layout == "kpn":
        x_pad = xp.zeros((C, H + 2 * ph, W + 2 * pw, N), dtype=x.dtype)
        x_pad[:, ph:ph + H, pw:pw + W] = x.transpose(1, 2, 3, 0)
        col = xp.empty((C, kh, kw, OH, OW, N), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                col[:, i, j] = x_pad[_window(i, j, (OH, OW), stride, 1)]
        return col.reshape(C * kh * kw, OH * OW * N)
    x_pad = x
    if ph or pw:
        x_pad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
        x_pad[:, :, ph:ph + H, pw:pw + W] = x
    if layout == "nkp":
        col = xp.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                col[:, :, i, j] = x_pad[_window(i, j, (OH, OW), stride, 2)]
        return col.reshape(N, C * kh * kw, OH * OW)
    x_pad = x_pad.transpose(1, 0, 2, 3)   # "knp": the same copies, channel axis first
    col = xp.empty((C, kh, kw, N, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            col[:, i, j] = x_pad[_window(i, j, (OH, OW), stride, 2)]
    return col.reshape(C * kh * kw, N * OH * OW)


def _col2im_array(col, x_shape, kernel, stride, padding, layout="nkp"):
    """The adjoint of :func:`_im2col_array`: every column entry added back where it came from."""
    N, C, H, W = x_shape
    (kh, kw), (ph, pw) = kernel, padding
    OH, OW = _out_size("col2im", (H, W), kernel, stride, padding)
    expected = (N, C * kh * kw, OH * OW) if layout == "nkp" else (C * kh * kw, N * OH * OW)
    if col.shape != expected:
        raise ValueError(f"col2im: columns of shape {col.shape} do not match input shape "
                         f"{tuple(x_shape)} with kernel {kh}x{kw} (expected {expected})")
    xp = backend.get_array_module(col)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    if layout == "nkp":
        col = col.reshape(N, C, kh, kw, OH, OW)
        x_pad = xp.zeros((N, C, Hp, Wp), dtype=col.dtype)
        for i in range(kh):
            for j in range(kw):
                x_pad[_window(i, j, (OH, OW), stride, 2)] += col[:, :, i, j]
    elif layout == "knp":  # accumulate in the columns' axis order, then transpose once
        col = col.reshape(C, kh, kw, N, OH, OW)
        x_pad = xp.zeros((C, N, Hp, Wp), dtype=col.dtype)
        for i in range(kh):
            for j in range(kw):
                x_pad[_window(i, j, (OH, OW), stride, 2)] += col[:, i, j]
        x_pad = x_pad.transpose(1, 0, 2, 3)
    else:
        col = col.reshape(C, kh, kw, OH, OW, N)
        x_pad = xp.zeros((C, Hp, Wp, N), dtype=col.dtype)
        for i in range(kh):
            for j in range(kw):
                x_pad[_window(i, j, (OH, OW), stride, 1)] += col[:, i, j]
        x_pad = x_pad.transpose(3, 0, 1, 2)
    return xp.ascontiguousarray(x_pad[:, :, ph:ph + H, pw:pw + W])


# -- im2col / col2im: each the other's backward -------------------------------------------------
class Im2col(Function):
    """col[n, (c,i,j), (p,q)] = x_pad[n, c, s_h·p + i, s_w·q + j];  backward: col2im (its adjoint).

    ``layout`` "nkp" gives (N, C·kh·kw, OH·OW); "knp" and "kpn" give (C·kh·kw, N·OH·OW)
    with the columns ordered (n, p) or (p, n)."""

    def __init__(self, kernel, stride, padding, layout="nkp"):
        self.kernel, self.stride, self.padding, self.layout = kernel, stride, padding, layout

    def forward(self, x):
        _check_image("im2col", x.shape)
        self.x_shape = x.shape
        return _im2col_array(x, self.kernel, self.stride, self.padding, self.layout)

    def backward(self, gcol):
        return Col2im(self.x_shape, self.kernel, self.stride, self.padding, self.layout)(gcol)


class Col2im(Function):
    """x[n, c, h, w] = Σ of the column entries copied from pixel (h, w);  backward: im2col."""

    def __init__(self, x_shape, kernel, stride, padding, layout="nkp"):
        self.x_shape, self.kernel, self.stride, self.padding = x_shape, kernel, stride, padding
        self.layout = layout

    def forward(self, col):
        return _col2im_array(col, self.x_shape, self.kernel, self.stride, self.padding,
                             self.layout)

    def backward(self, gx):
        return Im2col(self.kernel, self.stride, self.padding, self.layout)(gx)


def im2col(x, kernel_size, stride=1, padding=0):
    """Columns (N, C·kh·kw, OH·OW) of the windows of ``x`` (N, C, H, W)."""
    return Im2col(_pair(kernel_size, "kernel_size", "im2col", 1),
                  _pair(stride, "stride", "im2col", 1),
                  _pair(padding, "padding", "im2col", 0))(x)


def col2im(col, input_shape, kernel_size, stride=1, padding=0):
    """The adjoint of :func:`im2col`: adds columns (N, C·kh·kw, OH·OW) back into ``input_shape``."""
    input_shape = tuple(int(s) for s in input_shape)
    _check_image("col2im", input_shape)
    return Col2im(input_shape, _pair(kernel_size, "kernel_size", "col2im", 1),
                  _pair(stride, "stride", "col2im", 1),
                  _pair(padding, "padding", "col2im", 0))(col)


# -- convolution ---------------------------------------------------------------------------------
def _check_conv(x_shape, W_shape, b_shape, stride, padding):
    if len(x_shape) != 4:
        raise ValueError(f"conv2d: input must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    if len(W_shape) != 4:
        raise ValueError(f"conv2d: weight must be 4-D (C_out, C_in, kh, kw), got shape "
                         f"{tuple(W_shape)}")
    if x_shape[1] != W_shape[1]:
        raise ValueError(f"conv2d: input has {x_shape[1]} channels but the weight expects "
                         f"{W_shape[1]} (input shape {tuple(x_shape)}, weight shape "
                         f"{tuple(W_shape)})")
    if b_shape is not None and tuple(b_shape) != (W_shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({W_shape[0]},) for weight shape "
                         f"{tuple(W_shape)}, got {tuple(b_shape)}")
    return _out_size("conv2d", x_shape[2:], W_shape[2:], stride, padding)


class Conv2d(Function):
    """y[n, o, p, q] = Σ_{c,i,j} W[o, c, i, j] · x_pad[n, c, s_h·p + i, s_w·q + j] + b[o].

    As matrices, Y[n] = W₂ · col[n] + b with col = im2col(x), W₂ = W.reshape(C_out, C·kh·kw):

        ∂L/∂W₂ = Σ_n ∂L/∂Y[n] · col[n]ᵀ,   ∂L/∂b = Σ_{n,p} ∂L/∂Y[n, :, p],
        ∂L/∂x  = col2im(W₂ᵀ · ∂L/∂Y).

    Only the gradients that are needed are computed (the input images need none).

    The column layout is chosen by shape (measured with tools/bench_conv.py): many pixels
    per image (OH·OW ≥ C·kh·kw, the first layer): one product per image on "nkp" columns,
    whose result is already NCHW. Otherwise one product for the whole batch on "knp" columns,
    or "kpn" when rows are short (OW < 8), and a transpose of the (smaller) output: N thin
    per-image products would waste the BLAS, and the per-image ∂L/∂W₂ to be summed would be
    bigger than the columns themselves.
    """

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    @staticmethod
    def choose_layout(x_shape, W_shape, out_hw):
        C_out, C_in, kh, kw = W_shape
        if out_hw[0] * out_hw[1] >= C_in * kh * kw:
            return "nkp"
        return "kpn" if out_hw[1] < 8 else "knp"

    def forward(self, x, W, b=None):
        OH, OW = _check_conv(x.shape, W.shape, None if b is None else b.shape,
                             self.stride, self.padding)
        N, C_out = x.shape[0], W.shape[0]
        self.layout = self.choose_layout(x.shape, W.shape, (OH, OW))
        col = _im2col_array(x, W.shape[2:], self.stride, self.padding, self.layout)
        y = W.reshape(C_out, -1) @ col                # (N, C_out, P) or (C_out, N·P)
        if b is not None:
            y += b[:, None]
        xp = backend.get_array_module(x)
        if self.layout == "knp":
            y = xp.ascontiguousarray(y.reshape(C_out, N, -1).transpose(1, 0, 2))
        elif self.layout == "kpn":
            y = xp.ascontiguousarray(y.reshape(C_out, -1, N).transpose(2, 0, 1))
        # the columns are what ∂L/∂W needs: keep them rather than build them twice
        self.col = col if len(self.needs_input_grad) > 1 and self.needs_input_grad[1] else None
        return y.reshape(N, C_out, OH, OW)

    def backward(self, gy):
        x, W = self.inputs[:2]
        N, C_out = gy.shape[:2]
        cols = (W.shape[2:], self.stride, self.padding, self.layout)
        gY = reshape(gy, (N, C_out, -1))                          # (N, C_out, P)
        if self.layout != "nkp":                                  # (C_out, N·P) or (C_out, P·N)
            gY = reshape(transpose(gY, (1, 0, 2) if self.layout == "knp" else (1, 2, 0)),
                         (C_out, -1))
        gx = gW = gb = None
        if self.needs_input_grad[0]:
            gcol = matmul(transpose(reshape(W, (C_out, -1))), gY)  # col's layout
            gx = Col2im(x.shape, *cols)(gcol)
        if self.needs_input_grad[1]:
            if is_grad_enabled() and x.requires_grad:  # double backward: ∂gW/∂x is wanted
                col = Im2col(*cols)(x)
            else:
                col = Tensor(self.col)
            if self.layout == "nkp":
                gW2 = sum(matmul(gY, swapaxes(col, 1, 2)), axis=0)
            else:
                # (col · gYᵀ)ᵀ, the same product as gY · colᵀ: OpenBLAS is 10–30% faster with
                # the big column matrix as the left operand, read in its stored order
                # (measured on this machine for conv2 and conv3, batch 32 and 128)
                gW2 = transpose(matmul(col, transpose(gY)))
            gW = reshape(gW2, W.shape)
        if len(self.inputs) == 3 and self.needs_input_grad[2]:
            # Σ over pixels as a product with ones: a BLAS call instead of a strided sum
            xp = backend.get_array_module(gy)
            ones = Tensor(xp.ones((gY.shape[-1], 1), dtype=gy.dtype))
            gb = matmul(gY, ones)
            gb = reshape(sum(gb, axis=0) if self.layout == "nkp" else gb, (C_out,))
        return (gx, gW, gb) if len(self.inputs) == 3 else (gx, gW)


def conv2d(x, W, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation, as in PyTorch) of ``x`` (N, C_in, H, W) with
    ``W`` (C_out, C_in, kh, kw) plus ``b`` (C_out,); ``stride``/``padding`` int or pair."""
    stride = _pair(stride, "stride", "conv2d", 1)
    padding = _pair(padding, "padding", "conv2d", 0)
    args = (x, W) if b is None else (x, W, b)
    return Conv2d(stride, padding)(*args)


def conv2d_simple(x, W, b=None, stride=1, padding=0):
    """The same convolution composed from differentiable ops: im2col, reshape, matmul, add.

    Slower (nothing is skipped or reused), but obviously right: the test oracle for
    :func:`conv2d`."""
    x, W = as_tensor(x), as_tensor(W)
    stride = _pair(stride, "stride", "conv2d", 1)
    padding = _pair(padding, "padding", "conv2d", 0)
    OH, OW = _check_conv(x.shape, W.shape, None if b is None else as_tensor(b).shape,
                         stride, padding)
    C_out = W.shape[0]
    col = im2col(x, W.shape[2:], stride, padding)                         # (N, K, P)
    y = matmul(reshape(W, (C_out, -1)), col)                              # (N, C_out, P)
    if b is not None:
        y = y + reshape(b, (C_out, 1))
    return reshape(y, (x.shape[0], C_out, OH, OW))


# -- pooling -------------------------------------------------------------------------------------
def _pool_args(op, x, kernel_size, stride):
    kernel = _pair(kernel_size, "kernel_size", op, 1)
    stride = kernel if stride is None else _pair(stride, "stride", op, 1)
    _check_image(op, x.shape)
    out_hw = _out_size(op, x.shape[2:], kernel, stride, (0, 0))
    return kernel, stride, out_hw


def _tiles(x, kernel, out_hw):
    """The kh·kw strided views x[:, :, i::kh, j::kw] (cropped to the tiled area), offsets in
    row-major order: view k holds element k of every window, laid out like the output."""
    (kh, kw), (OH, OW) = kernel, out_hw
    return [x[:, :, i:OH * kh:kh, j:OW * kw:kw] for i in range(kh) for j in range(kw)]


class _TiledScatter(Function):
    """gx = gy routed to one element per window: gx[tile k] = mask_k · gy (0 outside the tiled
    area), for constant 0/1 masks (N, C, OH, OW), one per window offset k;
    backward: _TiledGather (its adjoint)."""

    def __init__(self, masks, kernel, x_shape):
        self.masks, self.kernel, self.x_shape = masks, kernel, x_shape

    def forward(self, gy):
        xp = backend.get_array_module(gy)
        tiled = tuple(o * k for o, k in zip(gy.shape[2:], self.kernel)) == self.x_shape[2:]
        # every element of a fully tiled input is written below: no need to zero it first
        gx = (xp.empty if tiled else xp.zeros)(self.x_shape, dtype=gy.dtype)
        for mask, gx_k in zip(self.masks, _tiles(gx, self.kernel, gy.shape[2:])):
            xp.multiply(gy, mask, out=gx_k)
        return gx

    def backward(self, ggx):
        return _TiledGather(self.masks, self.kernel)(ggx)


class _TiledGather(Function):
    """y = Σ_k mask_k · x[tile k]: each window's masked element;  backward: _TiledScatter."""

    def __init__(self, masks, kernel):
        self.masks, self.kernel = masks, kernel

    def forward(self, x):
        self.x_shape = x.shape
        out_hw = self.masks[0].shape[2:]
        y = 0
        for mask, x_k in zip(self.masks, _tiles(x, self.kernel, out_hw)):
            y = y + mask * x_k
        return y.astype(x.dtype, copy=False)

    def backward(self, gy):
        return _TiledScatter(self.masks, self.kernel, self.x_shape)(gy)


class MaxPool2dTiled(Function):
    """y[n, c, p, q] = max of x over the k×k tile (p, q) (windows side by side, stride = k).

    The gradient goes to one element per window — the first maximum in row-major order, as in
    PyTorch — so each window passes on exactly its upstream gradient, even when ReLU has made
    every element of the window 0.

    Speed: the window maximum is taken as kh·kw elementwise ``maximum``s of strided views
    (:func:`_tiles`), not ``x6.max(axis=(3, 5))`` on a 6-D view, which NumPy reduces over
    axes of length 2 one short inner loop at a time (~25× slower, ~110 ms for the first
    layer at batch 128). The first-maximum masks come from the same views: view k is
    picked where it equals the maximum and no earlier view was picked.
    """

    def __init__(self, kernel):
        self.kernel = kernel

    def forward(self, x):
        xp = backend.get_array_module(x)
        kh, kw = self.kernel
        out_hw = (x.shape[2] // kh, x.shape[3] // kw)
        views = _tiles(x, self.kernel, out_hw)
        y = xp.array(views[0], copy=True) if len(views) == 1 else xp.maximum(views[0], views[1])
        for x_k in views[2:]:
            xp.maximum(y, x_k, out=y)
        masks, taken = [], None
        for x_k in views[:-1]:
            first = x_k == y                       # a maximum ...
            if taken is None:
                taken = first.copy()
            else:
                xp.greater(first, taken, out=first)   # ... and no earlier one (first & ~taken)
                taken |= first
            masks.append(first)
        # the last offset is picked where no other was: ~taken, no comparison needed (and a
        # NaN window, equal to nothing, still sends its gradient somewhere)
        masks.append(~taken if taken is not None else xp.ones(y.shape, dtype=bool))
        self.masks = masks
        return y

    def backward(self, gy):
        x, = self.inputs
        return _TiledScatter(self.masks, self.kernel, x.shape)(gy)


def max_pool2d(x, kernel_size, stride=None):
    """Max over kh×kw windows of ``x`` (N, C, H, W) every ``stride`` pixels (default: the
    kernel size, as PyTorch); windows that would run past the edge are dropped (floor mode).

    Ties: the gradient goes to the first maximum of each window (row-major), as in PyTorch.
    Non-overlapping windows take a fast path (:class:`MaxPool2dTiled`); other strides go
    through im2col (:func:`max_pool2d_simple`)."""
    x = as_tensor(x)
    kernel, stride, _ = _pool_args("max_pool2d", x, kernel_size, stride)
    if stride == kernel:
        return MaxPool2dTiled(kernel)(x)
    return max_pool2d_simple(x, kernel, stride)


def max_pool2d_simple(x, kernel_size, stride=None):
    """The same pooling composed from differentiable ops, for any stride: im2col columns
    (N, C, kh·kw, OH·OW), times a 0/1 constant picking each window's first maximum, summed.
    The general path of :func:`max_pool2d` and the test oracle of its tiled fast path."""
    x = as_tensor(x)
    kernel, stride, (OH, OW) = _pool_args("max_pool2d", x, kernel_size, stride)
    N, C = x.shape[:2]
    kh, kw = kernel
    col = reshape(im2col(x, kernel, stride), (N, C, kh * kw, OH * OW))
    xp = backend.get_array_module(x)
    first = col.data.argmax(axis=2)[:, :, None, :]
    pick = Tensor((xp.arange(kh * kw).reshape(1, 1, -1, 1) == first).astype(x.dtype))
    return reshape(sum(col * pick, axis=2), (N, C, OH, OW))


def avg_pool2d(x, kernel_size, stride=None):
    """Mean over kh×kw windows of ``x`` (N, C, H, W); stride defaults to the kernel size;
    floor mode. A linear map: its backward spreads gy/(kh·kw) back over each window."""
    x = as_tensor(x)
    kernel, stride, (OH, OW) = _pool_args("avg_pool2d", x, kernel_size, stride)
    N, C = x.shape[:2]
    kh, kw = kernel
    col = reshape(im2col(x, kernel, stride), (N, C, kh * kw, OH * OW))
    return reshape(sum(col, axis=2) * (1.0 / (kh * kw)), (N, C, OH, OW))
