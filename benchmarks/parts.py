"""The parts of the article's model that the benchmarks time, in minimm and in PyTorch.

Each part is one train step — forward, backward, an Adam update (lr 1e-3), float32 — on
fixed inputs:

    full   MultiModalModel: image branch + text branch, concatenated, Linear(640 -> 10),
           cross-entropy                          images (B, 3, 32, 32), ids (B, 16)
    image  Conv32-Pool-Conv64-Pool-Conv128-Pool + Linear(512 -> 10), cross-entropy
    text   Embedding(1000, 64) + LSTM(64 -> 128) over 16 steps + Linear(128 -> 10)
    mha    one multi-head self-attention block, L 64, d_model 128, 8 heads, loss mean(out²)

The weights are drawn once by minimm's initialisers (:func:`make_weights`) and the inputs
once by a seeded generator (:func:`make_data`); both are written to .npz files that the
two frameworks' worker processes read, so both time the same model on the same numbers.
This module imports neither framework at the top: a worker imports only its own.
"""
import numpy as np

PARTS = ("full", "image", "text", "mha")
VOCAB, SEQ_LEN, CLASSES, EMBED, HIDDEN = 1000, 16, 10, 64, 128
MHA_L, MHA_E, MHA_HEADS = 64, 128, 8
_MODES = {"full": "multimodal", "image": "image", "text": "text"}


def check_part(part):
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
    return part


# -- weights and data (made once, in the driver) -------------------------------------------------
def build_minimm(part, seed=0):
    """The minimm model of ``part`` with freshly drawn weights (minimm's initialisers)."""
    from minimm import nn
    from minimm.models import MultiModalModel
    rng = np.random.default_rng(seed)
    if check_part(part) == "mha":
        return nn.MultiHeadAttention(MHA_E, MHA_HEADS, rng=rng)
    return MultiModalModel(VOCAB, CLASSES, _MODES[part], rng=rng)


def make_weights(part, seed=0):
    """{name: float32 array}: the minimm state dict of a freshly initialised ``part``."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in build_minimm(part, seed).state_dict().items()}


def make_data(part, batch_size, seed=1):
    """{name: array}: the step's fixed inputs."""
    rng = np.random.default_rng((seed, batch_size))
    if check_part(part) == "mha":
        return {"x": rng.standard_normal((batch_size, MHA_L, MHA_E)).astype(np.float32)}
    data = {"labels": rng.integers(0, CLASSES, batch_size)}
    if part in ("full", "image"):
        data["images"] = rng.standard_normal((batch_size, 3, 32, 32)).astype(np.float32)
    if part in ("full", "text"):
        data["ids"] = rng.integers(0, VOCAB, (batch_size, SEQ_LEN))
    return data


def analytic_flops(part, B):
    """Forward FLOPs of the convolutions and matrix products (multiply-add = 2)."""
    conv = 2 * B * (32 * 30 * 30 * 3 * 9 + 64 * 13 * 13 * 32 * 9 + 128 * 4 * 4 * 64 * 9)
    lstm = 2 * B * SEQ_LEN * (EMBED + HIDDEN) * 4 * HIDDEN
    if part == "mha":
        return 2 * B * MHA_L * MHA_E * MHA_E * 4 + 2 * 2 * B * MHA_L * MHA_L * MHA_E
    head_in = {"full": 640, "image": 512, "text": 128}[part]
    return ((conv if part != "text" else 0) + (lstm if part != "image" else 0)
            + 2 * B * head_in * CLASSES)


# -- minimm ----------------------------------------------------------------------------------------
def use_fast_kernels():
    """Route minimm's layers through the fast kernels (``minimm.functional.fast``)."""
    from minimm.nn.fast import enable_fast_kernels
    enable_fast_kernels()


def minimm_step(part, weights, data, kernels="default"):
    """(step, params): ``step()`` does one train step and returns the loss as a float."""
    import minimm as mm
    from minimm import functional as F, optim
    if kernels == "fast":
        use_fast_kernels()
    model = build_minimm(part)
    model.load_state_dict(weights)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=1e-3)
    if part == "mha":
        x = mm.Tensor(data["x"])

        def loss_fn():
            out = model(x, x, x)
            return (out * out).mean()
    else:
        images = mm.Tensor(data["images"]) if "images" in data else None
        ids, labels = data.get("ids"), data["labels"]

        def loss_fn():
            return F.cross_entropy(model(images, ids), labels)

    def step():
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return step, params


# -- PyTorch ---------------------------------------------------------------------------------------
def torch_step(part, weights, data):
    """The PyTorch twin of :func:`minimm_step`, with the same weights (minimm keeps (in, out)
    matrices and applies x W; torch keeps (out, in) and applies x Wᵀ: copied transposed)."""
    import torch
    tnn = torch.nn
    t = lambda a, transpose=False: torch.tensor(np.ascontiguousarray(a.T if transpose else a))  # noqa: E731

    if part == "mha":
        model = tnn.MultiheadAttention(MHA_E, MHA_HEADS, batch_first=True)
        with torch.no_grad():
            model.in_proj_weight.copy_(torch.cat([t(weights[k], True) for k in ("W_q", "W_k", "W_v")]))
            model.in_proj_bias.copy_(torch.cat([t(weights[k]) for k in ("b_q", "b_k", "b_v")]))
            model.out_proj.weight.copy_(t(weights["W_o"], True))
            model.out_proj.bias.copy_(t(weights["b_o"]))
        x = torch.tensor(data["x"])

        def loss_fn():
            out, _ = model(x, x, x, need_weights=False)
            return (out * out).mean()
    else:
        class Twin(tnn.Module):
            def __init__(self):
                super().__init__()
                self.image = self.embed = self.lstm = None
                if part in ("full", "image"):
                    layers = []
                    for i in (0, 3, 6):
                        W, b = weights[f"image.{i}.W"], weights[f"image.{i}.b"]
                        conv = tnn.Conv2d(W.shape[1], W.shape[0], W.shape[2])
                        conv.weight.data, conv.bias.data = t(W), t(b)
                        layers += [conv, tnn.ReLU(), tnn.MaxPool2d(2)]
                    self.image = tnn.Sequential(*layers, tnn.Flatten())
                if part in ("full", "text"):
                    self.embed = tnn.Embedding(VOCAB, EMBED)
                    self.embed.weight.data = t(weights["text.embed.W"])
                    self.lstm = tnn.LSTM(EMBED, HIDDEN, batch_first=True)  # gates i, f, g, o
                    self.lstm.weight_ih_l0.data = t(weights["text.lstm.W"], True)
                    self.lstm.weight_hh_l0.data = t(weights["text.lstm.U"], True)
                    self.lstm.bias_ih_l0.data = t(weights["text.lstm.b"])
                    # minimm keeps one bias b = b_ih + b_hh: b_hh is held at zero
                    self.lstm.bias_hh_l0.data.zero_()
                    self.lstm.bias_hh_l0.requires_grad_(False)
                W = weights["head.W"]
                self.head = tnn.Linear(W.shape[0], W.shape[1])
                self.head.weight.data, self.head.bias.data = t(W, True), t(weights["head.b"])

            def forward(self, images, ids):
                feats = []
                if self.image is not None:
                    feats.append(self.image(images))
                if self.lstm is not None:
                    _, (h, _) = self.lstm(self.embed(ids))
                    feats.append(h[0])
                return self.head(feats[0] if len(feats) == 1 else torch.cat(feats, dim=1))

        model = Twin()
        images = torch.tensor(data["images"]) if "images" in data else None
        ids = torch.tensor(data["ids"]) if "ids" in data else None
        labels = torch.tensor(data["labels"])

        def loss_fn():
            return tnn.functional.cross_entropy(model(images, ids), labels)

    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return step, params
