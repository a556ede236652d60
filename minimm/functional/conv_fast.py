"""The fast convolution and pooling kernels behind :func:`~minimm.functional.conv2d` and
:func:`~minimm.functional.max_pool2d`: the same numbers as the readable ones in ``conv.py``,
with fewer passes over memory.

Readable twins: :func:`minimm.functional.conv.conv2d_simple` (``im2col`` + one matrix
product per image) and :func:`minimm.functional.conv.max_pool2d_simple` (``im2col`` + a
first-maximum pick); ``tests/test_conv.py`` checks every kernel here against them (values,
gradients, second derivatives) on every backend. Arguments arrive validated: ``conv.py``
checks them before it dispatches here. What each trick buys is in ``benchmarks/NOTES.md``.

- :class:`Conv2d`: one fused Function over three column layouts chosen by shape
  (:func:`choose_layout`); it keeps the forward's columns for ∂L/∂W and computes only the
  gradients that are needed (the input images need none).
- :class:`MaxPool2dTiled`: non-overlapping windows (stride = kernel) as kh·kw strided views;
  the maximum by elementwise ``maximum``s, the backward by masked copies.
"""
from .. import backend
from ..autograd import Function, Tensor, is_grad_enabled
from .math import matmul, sum
from .shape import reshape, swapaxes, transpose


def _out_hw(x_shape, kernel, stride, padding):
    """(OH, OW) = ⌊(H + 2p − k) / s⌋ + 1 (the arguments are already validated)."""
    (H, W), (kh, kw), (sh, sw), (ph, pw) = x_shape[2:], kernel, stride, padding
    return (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1


# -- column layouts ---------------------------------------------------------------------------
# Three layouts of the same numbers (K = C·kh·kw, P = OH·OW):
#   "nkp" (N, K, P)   one matrix per image (the readable im2col's); W₂ @ col is NCHW already.
#   "knp" (K, N·P)    one matrix for the batch.
#   "kpn" (K, P·N)    the same, batch index fastest: built from the image transposed to
#                     (C, H, W, N), so each copy and add runs over rows OW·N long instead of
#                     OW (strided loops are slow on short rows).
# Each is filled by kh·kw strided copies, one per kernel offset (i, j), from the padded image
# with its axes in the layout's order; the offsets' axes (kh, kw) sit after ``k_at`` of them.
_LAYOUTS = {  # layout -> (the image's axis order while columns are built, k_at)
    "nkp": ((0, 1, 2, 3), 2),     # image (N, C, H, W), columns (N, C, kh, kw, OH, OW)
    "knp": ((1, 0, 2, 3), 1),     # image (C, N, H, W), columns (C, kh, kw, N, OH, OW)
    "kpn": ((1, 2, 3, 0), 1),     # image (C, H, W, N), columns (C, kh, kw, OH, OW, N)
}


def _window(i, j, out_hw, stride, lead):
    """The slice of the padded input that kernel offset (i, j) sees, for every output pixel;
    ``lead`` full axes come before the two spatial axes."""
    (OH, OW), (sh, sw) = out_hw, stride
    return (slice(None),) * lead + (slice(i, i + sh * (OH - 1) + 1, sh),
                                    slice(j, j + sw * (OW - 1) + 1, sw))


def _shapes(x_shape, kernel, stride, padding, layout):
    """(axis order, k_at, where H sits, the padded image's shape, the columns' 6-D shape)."""
    order, k_at = _LAYOUTS[layout]
    (kh, kw), (ph, pw) = kernel, padding
    OH, OW = _out_hw(x_shape, kernel, stride, padding)
    s = order.index(2)
    padded = [x_shape[a] for a in order]
    padded[s] += 2 * ph
    padded[s + 1] += 2 * pw
    seen = list(padded)
    seen[s:s + 2] = OH, OW                       # what one kernel offset sees
    return order, k_at, s, tuple(padded), tuple(seen[:k_at]) + (kh, kw) + tuple(seen[k_at:])


def _flat_shape(x_shape, kernel, stride, padding, layout):
    N, C = x_shape[:2]
    OH, OW = _out_hw(x_shape, kernel, stride, padding)
    K = C * kernel[0] * kernel[1]
    return (N, K, OH * OW) if layout == "nkp" else (K, N * OH * OW)


def im2col_array(x, kernel, stride, padding, layout):
    """Columns of ``x`` (N, C, H, W) in ``layout`` (see above)."""
    N, C, H, W = x.shape
    (kh, kw), (ph, pw) = kernel, padding
    order, k_at, s, padded, col_shape = _shapes(x.shape, kernel, stride, padding, layout)
    out_hw = _out_hw(x.shape, kernel, stride, padding)
    xp = backend.get_array_module(x)
    x_pad = x.transpose(order)                   # a view …
    if ph or pw or layout == "kpn":              # … or a copy: zeros around, or batch-last
        x_pad = xp.zeros(padded, dtype=x.dtype)
        x_pad[(slice(None),) * s + (slice(ph, ph + H), slice(pw, pw + W))] = x.transpose(order)
    col = xp.empty(col_shape, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            col[(slice(None),) * k_at + (i, j)] = x_pad[_window(i, j, out_hw, stride, s)]
    return col.reshape(_flat_shape(x.shape, kernel, stride, padding, layout))


def col2im_array(col, x_shape, kernel, stride, padding, layout):
    """The adjoint of :func:`im2col_array`: every column entry added back where it came from,
    accumulated in the columns' axis order, then transposed back to NCHW once."""
    N, C, H, W = x_shape
    (kh, kw), (ph, pw) = kernel, padding
    order, k_at, s, padded, col_shape = _shapes(x_shape, kernel, stride, padding, layout)
    out_hw = _out_hw(x_shape, kernel, stride, padding)
    xp = backend.get_array_module(col)
    col = col.reshape(col_shape)
    x_pad = xp.zeros(padded, dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            x_pad[_window(i, j, out_hw, stride, s)] += col[(slice(None),) * k_at + (i, j)]
    x_pad = x_pad.transpose(tuple(order.index(a) for a in range(4)))     # back to NCHW
    return xp.ascontiguousarray(x_pad[:, :, ph:ph + H, pw:pw + W])


# -- im2col / col2im in a layout: each the other's backward -----------------------------------
class Im2colLayout(Function):
    """im2col in any of the three layouts: "nkp" gives (N, C·kh·kw, OH·OW); "knp" and "kpn"
    give (C·kh·kw, N·OH·OW) with the columns ordered (n, p) or (p, n). Backward:
    :class:`Col2imLayout` (its adjoint), so the fused convolution stays twice differentiable.
    Readable twin: ``conv.Im2col`` (layout "nkp")."""

    def __init__(self, kernel, stride, padding, layout):
        self.kernel, self.stride, self.padding, self.layout = kernel, stride, padding, layout

    def forward(self, x):
        self.x_shape = x.shape
        return im2col_array(x, self.kernel, self.stride, self.padding, self.layout)

    def backward(self, gcol):
        return Col2imLayout(self.x_shape, self.kernel, self.stride, self.padding,
                            self.layout)(gcol)


class Col2imLayout(Function):
    """col2im in any of the three layouts (the adjoint of :class:`Im2colLayout`, its
    backward). Readable twin: ``conv.Col2im``."""

    def __init__(self, x_shape, kernel, stride, padding, layout):
        self.x_shape, self.kernel, self.stride, self.padding = x_shape, kernel, stride, padding
        self.layout = layout

    def forward(self, col):
        return col2im_array(col, self.x_shape, self.kernel, self.stride, self.padding,
                             self.layout)

    def backward(self, gx):
        return Im2colLayout(self.kernel, self.stride, self.padding, self.layout)(gx)


# -- convolution ---------------------------------------------------------------------------------
class Conv2d(Function):
    """y[n, o, p, q] = Σ_{c,i,j} W[o, c, i, j] · x_pad[n, c, s_h·p + i, s_w·q + j] + b[o].

    As matrices, Y[n] = W₂ · col[n] + b with col = im2col(x), W₂ = W.reshape(C_out, C·kh·kw):

        ∂L/∂W₂ = Σ_n ∂L/∂Y[n] · col[n]ᵀ,   ∂L/∂b = Σ_{n,p} ∂L/∂Y[n, :, p],
        ∂L/∂x  = col2im(W₂ᵀ · ∂L/∂Y).

    Only the gradients that are needed are computed (the input images need none), in the
    column layout :func:`choose_layout` picks.
    """

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, W, b=None):
        OH, OW = _out_hw(x.shape, W.shape[2:], self.stride, self.padding)
        N, C_out = x.shape[0], W.shape[0]
        self.layout = choose_layout(x.shape, W.shape, (OH, OW))
        col = im2col_array(x, W.shape[2:], self.stride, self.padding, self.layout)
        y = W.reshape(C_out, col.shape[-2]) @ col               # (N, C_out, P) or (C_out, N·P)
        if b is not None:
            y += b[:, None]
        xp = backend.get_array_module(x)
        if self.layout == "knp":
            y = xp.ascontiguousarray(y.reshape(C_out, N, OH * OW).transpose(1, 0, 2))
        elif self.layout == "kpn":
            y = xp.ascontiguousarray(y.reshape(C_out, OH * OW, N).transpose(2, 0, 1))
        # the columns are what ∂L/∂W needs: keep them rather than build them twice
        self.col = col if len(self.needs_input_grad) > 1 and self.needs_input_grad[1] else None
        return y.reshape(N, C_out, OH, OW)

    def backward(self, gy):
        x, W = self.inputs[:2]
        N, C_out = gy.shape[:2]
        cols = (W.shape[2:], self.stride, self.padding, self.layout)
        P = gy.shape[2] * gy.shape[3]
        gY = reshape(gy, (N, C_out, P))                           # (N, C_out, P)
        if self.layout != "nkp":                                  # (C_out, N·P) or (C_out, P·N)
            gY = reshape(transpose(gY, (1, 0, 2) if self.layout == "knp" else (1, 2, 0)),
                         (C_out, N * P))
        gx = gW = gb = None
        if self.needs_input_grad[0]:
            K = W.shape[1] * W.shape[2] * W.shape[3]
            gcol = matmul(transpose(reshape(W, (C_out, K))), gY)   # col's layout
            gx = Col2imLayout(x.shape, *cols)(gcol)
        if self.needs_input_grad[1]:
            if is_grad_enabled() and x.requires_grad:  # double backward: ∂gW/∂x is wanted
                col = Im2colLayout(*cols)(x)
            else:
                col = Tensor(self.col)
            if self.layout == "nkp":
                gW2 = sum(matmul(gY, swapaxes(col, 1, 2)), axis=0)
            else:
                # (col · gYᵀ)ᵀ, the same product as gY · colᵀ: faster with the big column
                # matrix as the left operand, read in its stored order
                gW2 = transpose(matmul(col, transpose(gY)))
            gW = reshape(gW2, W.shape)
        if len(self.inputs) == 3 and self.needs_input_grad[2]:
            # Σ over pixels as a product with ones: a BLAS call instead of a strided sum
            xp = backend.get_array_module(gy)
            ones = Tensor(xp.ones((gY.shape[-1], 1), dtype=gy.dtype))
            gb = matmul(gY, ones)
            gb = reshape(sum(gb, axis=0) if self.layout == "nkp" else gb, (C_out,))
        return (gx, gW, gb) if len(self.inputs) == 3 else (gx, gW)


def choose_layout(x_shape, W_shape, out_hw):
    """The column layout for a convolution of this shape. Many pixels per image
    (OH·OW ≥ C·kh·kw, the first layer): one product per image on "nkp" columns, whose result
    is already NCHW. Otherwise one product for the whole batch on "knp" columns, or "kpn"
    when rows are short (OW < 8), and a transpose of the (smaller) output: N thin per-image
    products would waste the BLAS, and the per-image ∂L/∂W₂ to be summed would be bigger than
    the columns themselves."""
    C_out, C_in, kh, kw = W_shape
    if out_hw[0] * out_hw[1] >= C_in * kh * kw:
        return "nkp"
    return "kpn" if out_hw[1] < 8 else "knp"


def conv2d(x, W, b, stride, padding):
    """The fused convolution of validated Tensors (``conv.conv2d`` checks, then calls this)."""
    return Conv2d(stride, padding)(*((x, W) if b is None else (x, W, b)))



# -- max pooling over non-overlapping windows ------------------------------------------------------
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

    The window maximum is taken as kh·kw elementwise ``maximum``s of strided views
    (:func:`_tiles`), not as a reduction over a 6-D view (axes of length 2, one short inner
    loop at a time). The first-maximum masks come from the same views: view k is picked where
    it equals the maximum and no earlier view was picked.
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


def max_pool2d_tiled(x, kernel):
    """Max pooling of a validated Tensor with stride = kernel (``conv.max_pool2d`` dispatches
    here for non-overlapping windows)."""
    return MaxPool2dTiled(kernel)(x)
