"""Contrastive image–text loss (CLIP, Radford et al. 2021): the symmetric InfoNCE.

For a batch of N matching pairs, image embeddings I (N, D) and text embeddings T (N, D):

    Î = I / ‖I‖,  T̂ = T / ‖T‖                    (each row L2-normalised)
    S = s · Î T̂ᵀ                                  (N, N) cosine similarities, scaled by s
    L = ½ [ CE(S, diag) + CE(Sᵀ, diag) ]

CE(S, diag) = −(1/N) Σᵢ log softmax(Sᵢ)ᵢ: row i asks "which caption belongs to image i?"
(the other N − 1 captions are the negatives); the columns ask the reverse. The scale
s = exp(t) = 1/τ is the inverse temperature: a large s sharpens the softmax over the
batch. Everything is composed of differentiable operations (normalisation, matmul,
cross-entropy), so the gradient — ∂L/∂S = (softmax(S) − 1)/2N over rows plus the same over
columns, derived in chapter 10 — is the chain rule, and can be differentiated again.
"""
from .. import backend
from ..autograd import as_tensor
from .losses import cross_entropy
from .math import div, matmul, maximum, mul, sqrt, sum
from .shape import reshape, transpose


def normalize(x, axis=-1, eps=1e-12):
    """x / max(‖x‖₂, eps) along ``axis`` (PyTorch's ``F.normalize``): unit vectors, and a
    zero vector stays zero instead of becoming 0/0."""
    x = as_tensor(x)
    norm = sqrt(sum(x * x, axis=axis, keepdims=True))
    return div(x, maximum(norm, as_tensor(eps, like=x.data)))


def clip_logits(image_emb, text_emb, logit_scale):
    """S = s · Î T̂ᵀ (N, M) for image_emb (N, D) and text_emb (M, D): S[i, j] is s times the
    cosine similarity of image i and text j. ``logit_scale`` s: a 0-d Tensor or a number."""
    I, T = as_tensor(image_emb), as_tensor(text_emb)
    if I.ndim != 2 or T.ndim != 2 or I.shape[1] != T.shape[1]:
        raise ValueError(f"clip_logits: image_emb (N, D) and text_emb (M, D) must be 2-D with "
                         f"the same D, got {I.shape} and {T.shape}")
    s = as_tensor(logit_scale, like=I.data)
    if s.size != 1:
        raise ValueError(f"clip_logits: logit_scale must be a scalar, got shape {s.shape}")
    return mul(matmul(normalize(I), transpose(normalize(T))), reshape(s, ()))


def clip_loss(image_emb, text_emb, logit_scale):
    """Symmetric InfoNCE: L = ½ [CE(S, diag) + CE(Sᵀ, diag)], S = s · Î T̂ᵀ.

    image_emb, text_emb: (N, D), row n of each a matching pair (not yet normalised: the
    rows are L2-normalised here). logit_scale: s, a 0-d Tensor (learned: gradients flow
    into it) or a number. Returns the scalar loss, a Tensor.
    """
    I, T = as_tensor(image_emb), as_tensor(text_emb)
    if I.ndim != 2 or I.shape != T.shape or I.shape[0] < 1:
        raise ValueError(f"clip_loss: image_emb and text_emb must both be (N, D) with N >= 1 "
                         f"and the same shape (row n of each a matching pair), got {I.shape} "
                         f"and {T.shape}")
    S = clip_logits(I, T, logit_scale)                       # (N, N)
    target = backend.get_array_module(S).arange(S.shape[0])  # pair n matches pair n: diag
    return (cross_entropy(S, target) + cross_entropy(transpose(S), target)) * 0.5
