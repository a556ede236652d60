"""A small residual network for 32×32 images: the model of the fast CIFAR-10 recipe.

The layout is that of the ResNet-9 of the fast-training records (Page, "How to train your
ResNet", 2018), with widths as a parameter (default half of the original 64-128-256-512,
so that a from-scratch run fits in an hour on two CPU cores):

    prep    Conv3×3(3 → w₀) BN ReLU                                   32×32
    layer1  Conv3×3(w₀ → w₁) BN ReLU, MaxPool 2, + Residual(w₁)         16×16
    layer2  Conv3×3(w₁ → w₂) BN ReLU, MaxPool 2                         8×8
    layer3  Conv3×3(w₂ → w₃) BN ReLU, MaxPool 2, + Residual(w₃)         4×4
    head    MaxPool 4 (global), Linear(w₃ → classes), × ``scale``

with Residual(w): x ↦ x + f(f(x)), f = ReLU ∘ BN ∘ Conv3×3(w → w). Every convolution has
padding 1 and no bias (the BatchNorm after it has one). The logits are scaled by 1/8 as
in the record runs (a smaller initial logit scale suits label smoothing).

With ``whiten=True`` the prep block is instead the records' whitened input,

    prep    PatchWhitening(3×3: 3 → 27, fixed) Conv1×1(27 → w₀) BN ReLU             32×32

whose fixed filters are fitted to the training images (``model.prep[0].fit(images)``,
:class:`minimm.nn.PatchWhitening`) before training.
"""
from .. import nn
from ..nn.whitening import PatchWhitening


class ConvBN(nn.Sequential):
    """Conv3×3(c_in → c_out, padding 1, no bias) → BatchNorm2d → ReLU."""

    def __init__(self, c_in, c_out, rng=None):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False, rng=rng),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class Residual(nn.Module):
    """y = x + f(f(x)) with f = ConvBN(c → c): the shortcut carries x unchanged."""

    def __init__(self, channels, rng=None):
        super().__init__()
        self.f = nn.Sequential(ConvBN(channels, channels, rng), ConvBN(channels, channels, rng))

    def forward(self, x):
        return x + self.f(x)


class ResNet9(nn.Module):
    """The recipe's network (module docstring): images (B, 3, 32, 32) -> logits (B, classes).

    ``widths``: (w₀, w₁, w₂, w₃), channels of prep, layer1, layer2, layer3; ``whiten``: the
    whitened prep block (module docstring), whose ``prep[0]`` must be fitted before use."""

    def __init__(self, num_classes=10, widths=(32, 64, 128, 256), scale=0.125, rng=None,
                 whiten=False):
        super().__init__()
        w0, w1, w2, w3 = (int(w) for w in widths)
        self.widths, self.num_classes, self.scale = (w0, w1, w2, w3), int(num_classes), float(scale)
        self.whiten = bool(whiten)
        if self.whiten:
            white = PatchWhitening(3, 3)
            self.prep = nn.Sequential(white, nn.Conv2d(white.out_channels, w0, 1, bias=False,
                                                       rng=rng),
                                      nn.BatchNorm2d(w0), nn.ReLU())
        else:
            self.prep = ConvBN(3, w0, rng)
        self.layer1 = nn.Sequential(ConvBN(w0, w1, rng), nn.MaxPool2d(2), Residual(w1, rng))
        self.layer2 = nn.Sequential(ConvBN(w1, w2, rng), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(ConvBN(w2, w3, rng), nn.MaxPool2d(2), Residual(w3, rng))
        self.pool = nn.MaxPool2d(4)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(w3, self.num_classes, rng=rng)

    def forward(self, images):
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, 32, 32):
            raise ValueError(f"ResNet9: expected images (B, 3, 32, 32), got shape "
                             f"{tuple(images.shape)}")
        x = self.layer3(self.layer2(self.layer1(self.prep(images))))
        return self.head(self.flatten(self.pool(x))) * self.scale

    def config(self):
        """The constructor's arguments as numbers and a string (saved with a checkpoint)."""
        return {"num_classes": self.num_classes, "widths": ",".join(map(str, self.widths)),
                "scale": self.scale, "whiten": self.whiten}

    @classmethod
    def from_config(cls, config, rng=None):
        return cls(int(config["num_classes"]), tuple(int(w) for w in str(config["widths"])
                                                     .split(",")),
                   float(config.get("scale", 0.125)), rng=rng,
                   whiten=bool(config.get("whiten", False)))

    def extra_repr(self):
        return f"widths={self.widths}, scale={self.scale}, whiten={self.whiten}"


def forward_flops(widths=(32, 64, 128, 256), num_classes=10, whiten=False):
    """Multiply-adds × 2 of one image's forward pass (convolutions and the linear head)."""
    w0, w1, w2, w3 = widths
    conv = lambda hw, c_in, c_out: 2 * hw * hw * c_in * c_out * 9  # noqa: E731
    prep = conv(32, 3, 27) + 2 * 32 * 32 * 27 * w0 if whiten else conv(32, 3, w0)
    return (prep + conv(32, w0, w1) + 2 * conv(16, w1, w1) + conv(16, w1, w2)
            + conv(8, w2, w3) + 2 * conv(4, w3, w3) + 2 * w3 * num_classes)


__all__ = ["ResNet9", "Residual", "ConvBN", "forward_flops"]
