"""Optional callbacks for :func:`minimm.train.fit` that watch a run from inside (§9.6):

    GradientNorms(every=1)        ‖∂L/∂θ‖₂ and ‖θ‖₂ of every parameter tensor, step by step
    TensorBoard(log_dir)          loss and metrics (and weight histograms) as TensorBoard event
                                  files, via the optional ``tensorboardX``; then
                                  ``tensorboard --logdir runs/`` shows the run like any other
    read_scalars(log_dir)         the scalars back from those files (no TensorBoard needed)

Both use fit's hooks: ``on_after_backward(model, step)`` (the gradients are in ``p.grad``,
the optimiser step follows) and ``on_epoch_end(epoch, logs, model)``.
"""
import glob
import os
import struct

import numpy as np

from . import backend

from .train import Callback


def _norm(a):
    xp = backend.get_array_module(a)
    return float(xp.sqrt(xp.sum(xp.square(a.astype(xp.float64)))))


class GradientNorms(Callback):
    """Records, every ``every`` optimiser steps, for each parameter tensor (by its dotted name,
    e.g. ``image.0.W``; only those in ``names`` if given) the gradient norm ‖∂L/∂θ‖₂ and the
    weight norm ‖θ‖₂.

    After fit: ``steps`` (the step numbers), ``grad_norms`` and ``weight_norms`` ({name: list
    of floats}, one per recorded step), ``epoch_ends`` (the step count at the end of each
    epoch). Vanishing gradients show as a layer whose gradient norm falls to ~0 while the
    others learn; exploding ones as spikes. ``plot()`` draws both on log axes.
    """

    def __init__(self, every=1, names=None):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"GradientNorms: every must be a positive integer, got {every!r}")
        self.every, self.names = int(every), names
        self.steps, self.grad_norms, self.weight_norms, self.epoch_ends = [], {}, {}, []
        self._step = 0

    def _record(self, model, step):
        self.steps.append(int(step))
        for name, p in model.named_parameters():
            if self.names is not None and name not in self.names:
                continue
            g = p.grad.data if p.grad is not None else None
            self.grad_norms.setdefault(name, []).append(_norm(g) if g is not None else 0.0)
            self.weight_norms.setdefault(name, []).append(_norm(p.data))

    def on_after_backward(self, model, step):
        self._step = int(step) + 1
        if step % self.every == 0:
            self._record(model, step)

    def on_epoch_end(self, epoch, logs, model):
        self.epoch_ends.append(self._step)

    def plot(self, axes=None, title="per-layer norms during training"):
        """Two log-scale panels, gradient and weight norm against the step; returns the figure."""
        import matplotlib.pyplot as plt
        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for ax, table, what in ((axes[0], self.grad_norms, r"gradient norm $\|\partial L/"
                                 r"\partial\theta\|_2$"),
                                (axes[1], self.weight_norms, r"weight norm $\|\theta\|_2$")):
            for name, values in table.items():
                ax.plot(self.steps, values, label=name, lw=1)
            for s in self.epoch_ends[:-1]:
                ax.axvline(s, color="0.8", lw=0.8, zorder=0)
            ax.set_yscale("log")
            ax.set(xlabel="optimiser step (grey lines: epoch ends)", ylabel=what)
        axes[1].legend(fontsize=7, ncol=2, loc="best")
        axes[0].figure.suptitle(title)
        return axes[0].figure


class TensorBoard(Callback):
    """Writes a run as TensorBoard event files under ``log_dir`` with ``tensorboardX``:

        batch/<name>   every ``batch_every`` steps, the batch's logs (loss, …)
        epoch/<name>   after each epoch, the epoch's logs (loss, accuracy, val_loss, …)
        weights/<parameter>, grads/<parameter>   histograms each epoch (``histograms=True``)

    ``tensorboard --logdir runs/`` (``pip install tensorboard``) then shows the curves.
    tensorboardX is an optional extra (``pip install tensorboardX``); without it the
    constructor raises ImportError saying so.
    """

    def __init__(self, log_dir, batch_every=10, histograms=True):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoard callback: needs the optional package tensorboardX "
                              "(pip install tensorboardX, or minimm[tensorboard])") from e
        self.log_dir, self.batch_every, self.histograms = log_dir, int(batch_every), histograms
        self.writer = SummaryWriter(logdir=log_dir)

    def on_batch_end(self, step, logs, model):
        if step % self.batch_every == 0:
            for name, value in logs.items():
                self.writer.add_scalar(f"batch/{name}", float(value), step)

    def on_epoch_end(self, epoch, logs, model):
        for name, value in logs.items():
            self.writer.add_scalar(f"epoch/{name}", float(value), epoch)
        if self.histograms:
            for name, p in model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", backend.to_numpy(p.data), epoch)
                if p.grad is not None:
                    self.writer.add_histogram(f"grads/{name}", backend.to_numpy(p.grad.data),
                                              epoch)
        self.writer.flush()

    def on_train_end(self, history, model):
        self.writer.flush()

    def close(self):
        self.writer.close()


def _records(path):
    """The payloads of a TFRecord file, each checked against its masked CRC-32C."""
    from tensorboardX.record_writer import masked_crc32c
    with open(path, "rb") as f:
        data = f.read()
    pos, out = 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (crc_len,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if crc_len != masked_crc32c(header):
            raise ValueError(f"read_scalars: {path}: corrupt record header at byte {pos}")
        payload = data[pos + 12:pos + 12 + length]
        (crc_data,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if crc_data != masked_crc32c(payload) or len(payload) != length:
            raise ValueError(f"read_scalars: {path}: corrupt record at byte {pos}")
        out.append(payload)
        pos += 16 + length
    return out


def read_scalars(log_dir):
    """{tag: [(step, value), …]} of every scalar in the event files under ``log_dir``, parsed
    with tensorboardX's protocol buffers (the TFRecord framing and its CRCs checked here)."""
    from tensorboardX.proto import event_pb2
    files = sorted(glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"),
                             recursive=True))
    if not files:
        raise FileNotFoundError(f"read_scalars: no event files under {log_dir}")
    scalars = {}
    for path in files:
        for payload in _records(path):
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    scalars.setdefault(value.tag, []).append((int(event.step),
                                                              float(value.simple_value)))
    return scalars


__all__ = ["Callback", "GradientNorms", "TensorBoard", "read_scalars"]
