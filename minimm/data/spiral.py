"""A toy data set: interleaved 2-D spirals, one arm per class (not linearly separable)."""
import numpy as np


def spiral_data(n_per_class=200, n_classes=3, noise=0.2, seed=0):
    """X float32 (N, 2) and y int64 (N,), N = n_per_class · n_classes: arm k is the points
    r (sin θ, cos θ) with r from 0.05 to 1 and θ = 2πk / n_classes + 4r + noise · ε."""
    rng = np.random.default_rng(seed)
    r = np.tile(np.linspace(0.05, 1.0, n_per_class), n_classes)
    y = np.repeat(np.arange(n_classes), n_per_class)
    angle = y * (2 * np.pi / n_classes) + r * 4.0 + rng.standard_normal(r.shape) * noise
    X = np.stack([r * np.sin(angle), r * np.cos(angle)], axis=1).astype(np.float32)
    return X, y


__all__ = ["spiral_data"]
