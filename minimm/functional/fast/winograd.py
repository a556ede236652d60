"""Winograd's minimal filtering F(2×2, 3×3): a 3×3 convolution (stride 1) with 2.25× fewer
multiplications, in the CHWN layout of :mod:`.conv`.

For each 2×2 tile of output pixels, the 4×4 patch d of input it sees, and a 3×3 kernel g,

    y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        (Lavin & Gray, "Fast Algorithms for
                                              Convolutional Neural Networks", 2016)

        ⎡1  0 −1  0⎤        ⎡ 1    0    0 ⎤
    Bᵀ= ⎢0  1  1  0⎥    G = ⎢ ½    ½    ½ ⎥    Aᵀ = ⎡1 1  1  0⎤
        ⎢0 −1  1  0⎥        ⎢ ½   −½    ½ ⎥         ⎣0 1 −1 −1⎦
        ⎣0  1  0 −1⎦        ⎣ 0    0    1 ⎦

Summed over input channels, the ⊙ becomes 16 matrix products, one per position (ξ, ν) of
the 4×4 transformed tile: M_ξν = U_ξν V_ξν with U = G W Gᵀ (C_out, C) and V = Bᵀ d B
(C, tiles·N). That is 16·C_out·C multiplications per tile of 4 outputs against 36·C_out·C
for im2col. The transforms are small matrix products too, over all tiles of a block at once
(the Kronecker products BB = Bᵀ⊗Bᵀ (16×16), AA = Aᵀ⊗Aᵀ (4×16), GG = G⊗G (16×9)).

The backward is the adjoint of each linear step, with ∂L/∂M = AAᵀ ∂L/∂Y (per tile):

    ∂L/∂U_ξν = ∂L/∂M_ξν V_ξνᵀ  (summed over tiles),   ∂L/∂W = GGᵀ-contraction of ∂L/∂U,
    ∂L/∂V_ξν = U_ξνᵀ ∂L/∂M_ξν,   ∂L/∂d = BBᵀ ∂L/∂V, added back where each patch came from.

Work goes one block of tiles at a time (about ``BLOCK_BYTES`` of transformed input), so the
transformed arrays stay in the cache; V is transformed again in the backward rather than
kept. The numbers agree with the direct convolution up to float32 rounding (the transforms'
entries are 0, ±½, ±1).
"""
import numpy as np

from ... import backend

_Bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
_At = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
BB = np.kron(_Bt, _Bt)          # (16, 16): V[(ξ,ν)] = Σ_(a,b) Bᵀ[ξ,a] Bᵀ[ν,b] d[(a,b)]
AA = np.kron(_At, _At)          # (4, 16):  y[(e,f)] = Σ_(ξ,ν) Aᵀ[e,ξ] Aᵀ[f,ν] M[(ξ,ν)]
GG = np.kron(_G, _G)            # (16, 9):  U[(ξ,ν)] = Σ_(i,j) G[ξ,i] G[ν,j] g[(i,j)]


class WinogradCore:
    """The array work of a 3×3, stride-1 CHWN convolution by F(2×2, 3×3), with the interface
    of :class:`minimm.functional.fast.conv._ConvCore` (setup / forward / backward over output
    rectangles)."""

    def __init__(self, padding):
        self.padding = padding

    def setup(self, x_shape, W_shape, has_b, out_hw, itemsize, used_hw=None, align=(1, 1)):
        from . import conv
        blocks, block_bytes = conv.blocks, conv.BLOCK_BYTES
        C, H, Wd, N = x_shape
        self.x_shape, self.out_hw = x_shape, out_hw
        used = out_hw if used_hw is None else used_hw
        self.used = used
        self.tiles = (-(-used[0] // 2), -(-used[1] // 2))
        # tile rectangles: 16 transformed numbers per channel per image per tile
        self.tile_regions = blocks(self.tiles, 16 * C * N * itemsize, block_bytes)
        self.regions = [self._pixels(r) for r in self.tile_regions]

    def _pixels(self, tr):
        t0, t1, u0, u1 = tr
        return (2 * t0, min(2 * t1, self.used[0]), 2 * u0, min(2 * u1, self.used[1]))

    def _padded(self, xc):
        """x with the padding around it and enough zeros below and right for whole tiles."""
        xp = backend.get_array_module(xc)
        C, H, W, N = xc.shape
        ph, pw = self.padding
        Th, Tw = self.tiles
        xpad = xp.zeros((C, 2 * Th + 2, 2 * Tw + 2, N), dtype=xc.dtype)
        h, w = min(H, 2 * Th + 2 - ph), min(W, 2 * Tw + 2 - pw)
        xpad[:, ph:ph + h, pw:pw + w] = xc[:, :h, :w]
        return xpad

    def _transform_input(self, xpad, tr):
        """V (16, C, tb·ub·N) = BB · d over the tiles of ``tr``."""
        xp = backend.get_array_module(xpad)
        t0, t1, u0, u1 = tr
        C, N = xpad.shape[0], xpad.shape[3]
        D = xp.empty((16, C, t1 - t0, u1 - u0, N), dtype=xpad.dtype)
        for a in range(4):
            for b in range(4):
                D[4 * a + b] = xpad[:, 2 * t0 + a:2 * t1 + a:2, 2 * u0 + b:2 * u1 + b:2]
        BBx = xp.asarray(BB, dtype=xpad.dtype)
        return (BBx @ D.reshape(16, -1)).reshape(16, C, -1)

    def forward(self, xc, W, b, wants_w, sink):
        xp = backend.get_array_module(xc)
        C_out, C = W.shape[:2]
        N = xc.shape[3]
        self.U = (xp.asarray(GG, dtype=W.dtype) @ W.reshape(C_out * C, 9).T).reshape(
            16, C_out, C)
        xpad = self._padded(xc)
        AAx = xp.asarray(AA, dtype=W.dtype)
        for tr, region in zip(self.tile_regions, self.regions):
            t0, t1, u0, u1 = tr
            tb, ub = t1 - t0, u1 - u0
            V = self._transform_input(xpad, tr)
            M = self.U @ V                                     # (16, C_out, tiles·N)
            Y4 = (AAx @ M.reshape(16, -1)).reshape(2, 2, C_out, tb, ub, N)
            Y = xp.empty((C_out, 2 * tb, 2 * ub, N), dtype=W.dtype)
            for e in range(2):
                for f in range(2):
                    Y[:, e::2, f::2] = Y4[e, f]
            if b is not None:
                Y += b.reshape(C_out, 1, 1, 1)
            p0, p1, q0, q1 = region
            sink(region, Y[:, :p1 - p0, :q1 - q0])

    def backward(self, grad, x_data, W, needs_x, needs_w, needs_b):
        from .conv import to_chwn
        xp = backend.get_array_module(W)
        C_out, C = W.shape[:2]
        Cx, H, Wd, N = self.x_shape
        ph, pw = self.padding
        xpad = self._padded(to_chwn(x_data)) if needs_w else None
        AAx = xp.asarray(AA, dtype=W.dtype)
        BBx = xp.asarray(BB, dtype=W.dtype)
        dU = xp.zeros((16, C_out, C), dtype=W.dtype) if needs_w else None
        gb = xp.zeros((C_out, 1), dtype=W.dtype) if needs_b else None
        Th, Tw = self.tiles
        gpad = xp.zeros((C, 2 * Th + 2, 2 * Tw + 2, N), dtype=W.dtype) if needs_x else None
        Ut = self.U.transpose(0, 2, 1)
        for tr, region in zip(self.tile_regions, self.regions):
            t0, t1, u0, u1 = tr
            tb, ub = t1 - t0, u1 - u0
            p0, p1, q0, q1 = region
            g = grad(region).reshape(C_out, p1 - p0, q1 - q0, N)
            if needs_b:
                gb += g.reshape(C_out, -1) @ xp.ones((g[0].size, 1), dtype=g.dtype)
            G4 = xp.zeros((2, 2, C_out, tb, ub, N), dtype=W.dtype)
            for e in range(2):
                for f in range(2):
                    part = g[:, e::2, f::2]
                    G4[e, f, :, :part.shape[1], :part.shape[2]] = part
            dM = (AAx.T @ G4.reshape(4, -1)).reshape(16, C_out, -1)   # ∂L/∂M = AAᵀ ∂L/∂Y
            if needs_w:
                V = self._transform_input(xpad, tr)
                dU += dM @ V.transpose(0, 2, 1)                         # Σ_tiles ∂L/∂M Vᵀ
            if needs_x:
                dV = Ut @ dM                                            # (16, C, tiles·N)
                dD = (BBx.T @ dV.reshape(16, -1)).reshape(4, 4, C, tb, ub, N)
                for a in range(4):
                    for b in range(4):
                        gpad[:, 2 * t0 + a:2 * t1 + a:2, 2 * u0 + b:2 * u1 + b:2] += dD[a, b]
        self.U = None
        gW = gx = None
        if needs_w:                                                     # ∂L/∂g = GGᵀ ∂L/∂U
            gW = (dU.reshape(16, C_out * C).T @ xp.asarray(GG, dtype=W.dtype)).reshape(
                C_out, C, 3, 3)
        if needs_x:
            gx = xp.zeros((C, H, Wd, N), dtype=W.dtype)
            h, w = min(H, 2 * Th + 2 - ph), min(Wd, 2 * Tw + 2 - pw)
            gx[:, :h, :w] = gpad[:, ph:ph + h, pw:pw + w]
        return gx, gW, None if gb is None else gb.reshape(C_out)
