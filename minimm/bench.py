"""``python -m minimm bench``: the train-step speed of the article's reference models.

One train step = forward + backward + an Adam update, float32. Each benchmark is timed in
minimm and, where PyTorch is installed, in PyTorch with the same layers and the same initial
weights, in the same process and interleaved (minimm, torch, minimm, torch …) so that a noisy
shared machine slows both alike; the table reports medians and their ratio. The achieved
GFLOP/s counts the convolution and matrix-product FLOPs analytically (a train step ≈ 3× the
forward FLOPs) and is set against this machine's measured matrix-product rate.

Benchmarks live in a registry; to add one, write a builder and decorate it::

    @register("mha")
    def _mha(batch_size, device, rng, use_torch):
        ...
        return minimm_step, torch_step_or_None, forward_flops

A step is a no-argument callable doing one train step and returning the loss as a Python
float (which also waits for a GPU to finish). The two steps' first losses, taken before any
update, are compared, so the table also shows that both sides compute the same model.

Caveat on the ratio: after each matrix product OpenBLAS keeps an idle worker spinning for
about 0.1 s, so PyTorch steps interleaved with minimm's run slower than PyTorch alone (the
fused step at batch 128: ≈ 115 ms here against ≈ 56–75 ms fresh). Setting
``OPENBLAS_THREAD_TIMEOUT=16`` before NumPy loads removes the spin and shows the fairer
ratio, ≈ 1.9–2.1× for the fused model at batch 128 (measured 2026-11-29).

Where minimm's time goes (fused step, batch 128, one thread, ≈ 140–200 ms): convolution
matrix products ≈ 27 %; convolution data movement (im2col, col2im, layout copies) ≈ 27 %;
max pooling ≈ 17 %; the LSTM ≈ 17 %; ReLU ≈ 6 %; Adam, loss and Python overhead ≈ 4 %. The
32→64 convolution is the largest gap to PyTorch (≈ 2×): its three OpenBLAS products alone
take as long as PyTorch's whole layer. Tried without gain: other column layouts, malloc
tuning, separable pooling, and splitting the copies over two threads (which helps only
once the OpenBLAS spin is removed).
"""
import os
import platform
import statistics
import time

import numpy as np

from . import backend
from . import functional as F
from . import nn, optim
from .autograd import Tensor

BENCHMARKS = {}   # name -> builder(batch_size, device, rng, use_torch) -> (mm_step, torch_step, flops)


def register(name):
    """Decorator adding a benchmark builder under ``name`` (used by ``--only``)."""
    def add(builder):
        BENCHMARKS[name] = builder
        return builder
    return add


# -- analytic FLOP counts (multiply-add = 2 FLOPs) ---------------------------------------------
def conv2d_flops(B, C_in, C_out, OH, OW, kh, kw):
    return 2 * B * C_out * OH * OW * C_in * kh * kw


def linear_flops(B, n_in, n_out):
    return 2 * B * n_in * n_out


def lstm_flops(B, T, n_in, H):
    return T * (linear_flops(B, n_in, 4 * H) + linear_flops(B, H, 4 * H))


# -- the article's branches (§4.3 / §5.2): defined in minimm.models, sized for the bench -------
from .models import EMBED_DIM as EMBED, HIDDEN_SIZE as HIDDEN  # noqa: E402
from .models import ImageBranch, MultiModalModel, TextBranch as _TextBranch  # noqa: E402

VOCAB, SEQ_LEN, CLASSES = 1000, 16, 10


def image_branch(rng=None):
    """Conv32-Pool-Conv64-Pool-Conv128-Pool, 3×3 'valid' convolutions with ReLU, 2×2 max
    pooling: (B, 3, 32, 32) -> (B, 128·2·2 = 512). (:class:`minimm.models.ImageBranch`)"""
    return ImageBranch(rng)


def image_branch_flops(B):
    return (conv2d_flops(B, 3, 32, 30, 30, 3, 3) + conv2d_flops(B, 32, 64, 13, 13, 3, 3)
            + conv2d_flops(B, 64, 128, 4, 4, 3, 3))


class TextBranch(_TextBranch):
    """Embedding(1000, 64) + LSTM(64 -> 128); the final hidden state h_T (B, 128)."""

    def __init__(self, rng=None):
        super().__init__(VOCAB, EMBED, HIDDEN, rng)


class Classifier(MultiModalModel):
    """Branches whose features are concatenated, then Linear(features -> 10):
    :class:`minimm.models.MultiModalModel` with the bench's vocabulary of 1000."""

    def __init__(self, image=True, text=True, rng=None):
        super().__init__(VOCAB, CLASSES, "multimodal" if image and text else
                         ("image" if image else "text"), rng=rng)


def _torch_classifier(model, device):
    """The same model in PyTorch, with minimm's initial weights copied in."""
    import torch
    tnn = torch.nn

    def t(a, transpose=False):
        a = backend.to_numpy(a)
        return torch.tensor(np.ascontiguousarray(a.T if transpose else a))

    class TorchClassifier(tnn.Module):
        def __init__(self):
            super().__init__()
            self.image = self.embed = self.lstm = None
            if model.image is not None:
                convs = [m for m in model.image if isinstance(m, nn.Conv2d)]
                layers = []
                for m in convs:
                    conv = tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size)
                    conv.weight.data, conv.bias.data = t(m.W), t(m.b)
                    layers += [conv, tnn.ReLU(), tnn.MaxPool2d(2)]
                self.image = tnn.Sequential(*layers, tnn.Flatten())
            if model.text is not None:
                self.embed = tnn.Embedding(VOCAB, EMBED)
                self.embed.weight.data = t(model.text.embed.W)
                self.lstm = tnn.LSTM(EMBED, HIDDEN, batch_first=True)   # gates i, f, g, o too
                self.lstm.weight_ih_l0.data = t(model.text.lstm.W, transpose=True)
                self.lstm.weight_hh_l0.data = t(model.text.lstm.U, transpose=True)
                self.lstm.bias_ih_l0.data = t(model.text.lstm.b)
                self.lstm.bias_hh_l0.data.zero_()
            self.head = tnn.Linear(model.head.in_features, CLASSES)
            self.head.weight.data = t(model.head.W, transpose=True)
            self.head.bias.data = t(model.head.b)

        def forward(self, images, ids):
            feats = []
            if self.image is not None:
                feats.append(self.image(images))
            if self.lstm is not None:
                _, (h, _) = self.lstm(self.embed(ids))
                feats.append(h[0])
            return self.head(feats[0] if len(feats) == 1 else torch.cat(feats, dim=1))

    return TorchClassifier().to(device)


def _torch_device(device, use_torch):
    """The torch device to compare against, or None (torch missing, or no CUDA in torch)."""
    if not use_torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    return device


def _check_float32(name, params):
    """The benchmarks are float32 end to end: a float64 parameter or gradient (one promoted
    constant is enough) would double the cost and make the comparison meaningless."""
    for i, p in enumerate(params):
        g = p.grad
        if p.dtype != np.float32 or (g is not None and g.dtype != np.float32):
            raise AssertionError(f"bench {name}: parameter {i} {p.shape} is {p.dtype} with "
                                 f"gradient {None if g is None else g.dtype}; expected float32")


def _classifier_benchmark(image, text):
    def build(batch_size, device, rng, use_torch):
        model = Classifier(image, text, rng=rng).to(device)
        xp = backend.get_array_module(model.head.W)
        images_np = rng.standard_normal((batch_size, 3, 32, 32)).astype(np.float32)
        ids_np = rng.integers(0, VOCAB, (batch_size, SEQ_LEN))
        labels_np = rng.integers(0, CLASSES, batch_size)
        images, ids, labels = (Tensor(xp.asarray(images_np)), xp.asarray(ids_np),
                               xp.asarray(labels_np))
        params = list(model.parameters())
        opt = optim.Adam(params, lr=1e-3)
        checked = []

        def mm_step():
            loss = F.cross_entropy(model(images, ids), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if not checked:                     # once: parameters and gradients float32
                _check_float32("classifier", params)
                checked.append(True)
            return loss.item()

        torch_step = None
        tdev = _torch_device(device, use_torch)
        if tdev is not None:
            import torch
            tmodel = _torch_classifier(model, tdev)
            topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
            t_images, t_ids, t_labels = (torch.tensor(a, device=tdev)
                                         for a in (images_np, ids_np, labels_np))

            def torch_step():
                loss = torch.nn.functional.cross_entropy(tmodel(t_images, t_ids), t_labels)
                topt.zero_grad()
                loss.backward()
                topt.step()
                return loss.item()

        flops = linear_flops(batch_size, model.head.in_features, CLASSES)
        flops += image_branch_flops(batch_size) if image else 0
        flops += lstm_flops(batch_size, SEQ_LEN, EMBED, HIDDEN) if text else 0
        return mm_step, torch_step, flops
    return build


register("image")(_classifier_benchmark(image=True, text=False))
register("text")(_classifier_benchmark(image=False, text=True))
register("fused")(_classifier_benchmark(image=True, text=True))


@register("mha")
def _mha_benchmark(batch_size, device, rng, use_torch, L=64, E=128, heads=8):
    """One multi-head self-attention block (L 64, d_model 128, 8 heads), loss = mean(out²)."""
    mha = nn.MultiHeadAttention(E, heads, rng=rng).to(device)
    x_np = rng.standard_normal((batch_size, L, E)).astype(np.float32)
    x = Tensor(backend.get_array_module(mha.W_q).asarray(x_np))
    params = list(mha.parameters())
    opt = optim.Adam(params, lr=1e-3)
    checked = []

    def mm_step():
        out = mha(x, x, x)
        loss = (out * out).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if not checked:                         # once: parameters and gradients float32
            _check_float32("mha", params)
            checked.append(True)
        return loss.item()

    torch_step = None
    tdev = _torch_device(device, use_torch)
    if tdev is not None:
        import torch
        ref = torch.nn.MultiheadAttention(E, heads, batch_first=True).to(tdev)
        with torch.no_grad():   # torch applies (out, in) matrices as x Wᵀ: copy the transposes
            t = lambda a: torch.tensor(backend.to_numpy(a.data), device=tdev)  # noqa: E731
            ref.in_proj_weight.copy_(torch.cat([t(mha.W_q).T, t(mha.W_k).T, t(mha.W_v).T]))
            ref.in_proj_bias.copy_(torch.cat([t(mha.b_q), t(mha.b_k), t(mha.b_v)]))
            ref.out_proj.weight.copy_(t(mha.W_o).T)
            ref.out_proj.bias.copy_(t(mha.b_o))
        t_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
        t_x = torch.tensor(x_np, device=tdev)

        def torch_step():
            out, _ = ref(t_x, t_x, t_x, need_weights=False)
            loss = (out * out).mean()
            t_opt.zero_grad()
            loss.backward()
            t_opt.step()
            return loss.item()

    flops = 4 * linear_flops(batch_size * L, E, E) + 2 * 2 * batch_size * L * L * E
    return mm_step, torch_step, flops


# -- measuring ---------------------------------------------------------------------------------
def matmul_gflops(device="cpu", n=1024, repeats=5):
    """This machine's float32 matrix-product rate (median of ``repeats``), in GFLOP/s."""
    xp = np if backend.check_device(device) == "cpu" else backend.cp
    rng = np.random.default_rng(0)
    a, b = (xp.asarray(rng.standard_normal((n, n)), dtype=xp.float32) for _ in range(2))
    out = xp.empty((n, n), dtype=xp.float32)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        xp.matmul(a, b, out=out)
        float(out[0, 0])          # waits for a GPU
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times[1:]) / 1e9


def _timed(step):
    t0 = time.perf_counter()
    loss = step()
    return time.perf_counter() - t0, loss


def run_benchmarks(batch_sizes=(32, 128), repeats=10, use_torch=True, only=None, device="cpu",
                   seed=0, warmup=2, print_fn=print):
    """Run the benchmarks; print a table row by row through ``print_fn`` (None: silent).

    Returns {"device", "matmul_gflops", "torch_version", "rows": [row, …]}, each row with
    keys benchmark, batch_size, minimm_ms, samples_per_s, gflops, matmul_fraction,
    torch_ms, torch_samples_per_s, ratio (minimm ms / torch ms) and loss_gap (|first minimm
    loss − first torch loss|); the torch entries are None without PyTorch.
    """
    device = backend.check_device(device)
    names = list(BENCHMARKS) if only is None else list(only)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"bench: unknown benchmark(s) {unknown}; available: {list(BENCHMARKS)}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"bench: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    say = print_fn or (lambda *a, **k: None)
    torch_version = None
    if _torch_device(device, use_torch) is not None:
        import torch
        torch_version = torch.__version__
    peak = matmul_gflops(device, n=1024 if device == "cpu" else 4096)
    say(_header(device, peak, torch_version, repeats))
    result = {"device": device, "matmul_gflops": peak, "torch_version": torch_version,
              "repeats": repeats, "rows": []}
    for batch_size in batch_sizes:
        for name in names:
            rng = np.random.default_rng(seed)
            mm_step, torch_step, flops = BENCHMARKS[name](int(batch_size), device, rng, use_torch)
            row = _measure(name, int(batch_size), mm_step, torch_step, flops, repeats, warmup, peak)
            result["rows"].append(row)
            say(_format_row(row))
    say(f"GFLOP/s: analytic conv/matmul FLOPs, train step = 3 x forward; % = share of the "
        f"{peak:.0f} GFLOP/s matmul rate. ratio = minimm ms / torch ms (lower is better).")
    return result


def _measure(name, batch_size, mm_step, torch_step, flops, repeats, warmup, peak):
    mm_times, torch_times = [], []
    first_mm = mm_step()                     # before any update: both sides the same model
    first_torch = torch_step() if torch_step else None
    for _ in range(max(warmup - 1, 0)):
        mm_step()
        if torch_step:
            torch_step()
    for r in range(repeats):                 # interleaved, alternating who goes first
        pair = [(mm_step, mm_times), (torch_step, torch_times)]
        for step, times in (pair if r % 2 == 0 else pair[::-1]):
            if step is not None:
                times.append(_timed(step)[0])
    mm_s = statistics.median(mm_times)
    gflops = 3 * flops / mm_s / 1e9
    row = {"benchmark": name, "batch_size": batch_size, "minimm_ms": mm_s * 1e3,
           "samples_per_s": batch_size / mm_s, "gflops": gflops, "matmul_fraction": gflops / peak,
           "torch_ms": None, "torch_samples_per_s": None, "ratio": None, "loss_gap": None}
    if torch_times:
        t_s = statistics.median(torch_times)
        row.update(torch_ms=t_s * 1e3, torch_samples_per_s=batch_size / t_s, ratio=mm_s / t_s)
        if first_mm is not None and first_torch is not None:
            row["loss_gap"] = abs(float(first_mm) - float(first_torch))
    return row


def _header(device, peak, torch_version, repeats):
    threads = os.environ.get("OMP_NUM_THREADS") or os.environ.get("OPENBLAS_NUM_THREADS")
    info = (f"minimm bench: forward + backward + Adam step, float32, device {device}, "
            f"median of {repeats}\nNumPy {np.__version__}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs{f', {threads} BLAS threads' if threads else ''}; ")
    if torch_version:
        import torch
        info += f"PyTorch {torch_version} ({torch.get_num_threads()} threads)"
    else:
        info += "PyTorch not compared"
    info += f"\nfloat32 matmul rate: {peak:.1f} GFLOP/s\n"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5 * (os.cpu_count() or 1):   # others compete for the cores: ratios suffer less
        info += (f"note: load average {load:.1f} on {os.cpu_count()} CPUs: other work is "
                 f"running, timings are noisy\n")
    cols = (f"{'model':<8}{'batch':>6}{'minimm ms':>11}{'samples/s':>11}{'GFLOP/s':>9}"
            f"{'% mm':>6}{'torch ms':>10}{'torch s/s':>11}{'ratio':>7}{'|Δloss|':>9}")
    return info + cols + "\n" + "-" * len(cols)


def _format_row(row):
    def opt(value, fmt, width):
        return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"
    return (f"{row['benchmark']:<8}{row['batch_size']:>6}{row['minimm_ms']:>11.1f}"
            f"{row['samples_per_s']:>11.0f}{row['gflops']:>9.1f}"
            f"{100 * row['matmul_fraction']:>5.0f}%"
            f"{opt(row['torch_ms'], '.1f', 10)}{opt(row['torch_samples_per_s'], '.0f', 11)}"
            f"{opt(row['ratio'], '.2f', 7)}{opt(row['loss_gap'], '.1e', 9)}")


def format_table(result):
    """The table of a :func:`run_benchmarks` result as text (header and rows)."""
    peak = result["matmul_gflops"]
    return "\n".join([_header(result["device"], peak, result["torch_version"], result["repeats"])]
                     + [_format_row(r) for r in result["rows"]])


__all__ = ["BENCHMARKS", "register", "run_benchmarks", "matmul_gflops", "format_table",
           "image_branch", "TextBranch", "Classifier"]
