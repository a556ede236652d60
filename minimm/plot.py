"""Plots of a training run: the article's §5.4 accuracy curves (train vs validation), the
loss curves, and the §9.4 confusion matrix as a heat map.

matplotlib is an optional extra: it is imported inside each function, never at import time
of minimm. The figures are built as ``matplotlib.figure.Figure`` objects, not through
pyplot, so nothing needs a display (any backend, Agg included) and no global figure list
grows; Jupyter shows a returned Figure as usual. Given ``path``, each function writes a PNG
atomically (a temporary file in the same folder, then ``os.replace``) and returns the figure.
"""

import numpy as np

from ._io import atomic_write


def _figure(figsize):
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def save_figure(fig, path, dpi=100):
    """Write ``fig`` as a PNG to ``path`` atomically; return ``path``."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=dpi)
    return path


def _history_dict(history):
    return history.history if hasattr(history, "history") else dict(history)


def _curves(history, key, ylabel, title, path, figsize, val_label):
    h = _history_dict(history)
    if key not in h:
        raise ValueError(f"plot: the history has no {key!r} (it has {sorted(h)})")
    fig, ax = _figure(figsize)
    epochs = np.arange(1, len(h[key]) + 1)
    ax.plot(epochs, h[key], "o-", label=f"train {key}")
    if "val_" + key in h:
        ax.plot(epochs, h["val_" + key], "s--", label=f"{val_label} {key}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xticks(epochs if len(epochs) <= 20 else epochs[::max(1, len(epochs) // 10)])
    ax.grid(alpha=0.3)
    ax.legend()
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_accuracy(history, path=None, title="Accuracy (train vs validation)", figsize=(6, 4),
                  val_label="validation"):
    """§5.4: ``history["accuracy"]`` and ``history["val_accuracy"]`` against the epoch.
    ``history``: a :class:`minimm.train.History` or its ``.history`` dict; ``val_label``
    names the held-out curve in the legend ("test" when the test set was the validation)."""
    return _curves(history, "accuracy", "accuracy", title, path, figsize, val_label)


def plot_loss(history, path=None, title="Loss (train vs validation)", figsize=(6, 4),
              val_label="validation"):
    """``history["loss"]`` and ``history["val_loss"]`` against the epoch."""
    return _curves(history, "loss", "loss", title, path, figsize, val_label)


def plot_confusion_matrix(cm, class_names=None, path=None, normalize=False,
                          title="Confusion matrix", figsize=(6.5, 5.5)):
    """A heat map of ``cm[i, j]`` (true class i predicted as j), counts written in the cells.
    ``normalize=True`` divides each row by its total (the per-class recall on the diagonal)."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"plot_confusion_matrix: expected a square matrix, got shape {cm.shape}")
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"plot_confusion_matrix: {len(names)} class names for a {k}x{k} matrix")
    values = cm.astype(np.float64)
    if normalize:
        rows = values.sum(axis=1, keepdims=True)
        values = np.divide(values, rows, out=np.zeros_like(values), where=rows != 0)
    fig, ax = _figure(figsize)
    image = ax.imshow(values, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    high = values.max() if values.size else 0
    for i in range(k):                          # a loop over cells: at most a few hundred
        for j in range(k):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] > 0.5 * high else "black")
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_modes(histories, accuracies, ceiling=None, chance=0.1, path=None,
               titles=("Test accuracy per epoch", "Test accuracy by mode"), figsize=(11, 4)):
    """One model trained in several modes (image only, text only, fused), side by side.

    Left: each mode's ``history["val_accuracy"]`` against the epoch; right: the final test
    accuracy of each mode as a labelled bar. ``histories`` and ``accuracies`` are dicts keyed
    by mode (in plotting order); ``ceiling`` (what the text alone can reach) is drawn dotted in
    both panels, ``chance`` dashed on the left."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    epochs = None
    for (mode, history), style in zip(histories.items(), ("o-", "s-", "^-", "d-")):
        curve = _history_dict(history)["val_accuracy"]
        epochs = np.arange(1, len(curve) + 1)
        ax1.plot(epochs, curve, style, label=mode)
    if ceiling is not None:
        ax1.axhline(ceiling, color="gray", ls=":", label=f"text ceiling {ceiling:.2f}")
        ax2.axhline(ceiling, color="gray", ls=":")
    ax1.axhline(chance, color="gray", ls="--", label="chance")
    ax1.set(xlabel="epoch", ylabel="test accuracy", title=titles[0], ylim=(0, 1))
    if epochs is not None:
        ax1.set_xticks(epochs)
    ax1.legend()
    bars = ax2.bar(list(accuracies), list(accuracies.values()),
                   color=[f"C{i}" for i in range(len(accuracies))])
    ax2.bar_label(bars, fmt="%.3f")
    ax2.set(ylabel="test accuracy", title=titles[1], ylim=(0, 1))
    if path is not None:
        save_figure(fig, path)
    return fig


__all__ = ["plot_accuracy", "plot_loss", "plot_confusion_matrix", "plot_modes", "save_figure"]
