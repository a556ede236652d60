"""Layer 6: training and evaluation, for any model — the article's §3.2 step 5 ("train with
cross-entropy and gradient descent") and the ``model.fit(...)`` of its §4.3 / §5.2 code.

    history = fit(model, train, val, epochs=10, loss_fn=loss_fn)      # Adam, lr 1e-3
    history.history["loss"], history.history["val_loss"], …            # one value per epoch
    result = evaluate(model, test, loss_fn)     # mean loss and logs, concatenated outputs

**Data.** ``train``, ``val`` and ``data`` are :class:`minimm.data.Loader` objects, or dicts of
host (NumPy) arrays with any keys that share their first dimension (fit wraps a dict in a
Loader: shuffled with ``seed`` for training, in order for evaluation). fit moves each batch
to the model's device and knows nothing of what the arrays mean — the loss function does.

**The loss contract.** ``loss_fn(model, batch)`` gets one mini-batch, a dict of arrays already
on the model's device, and returns one of

    loss                        a scalar Tensor, the mean over the batch
    (loss, logs)                logs: {name: float or 0-d Tensor / array}, per-batch means
    (loss, logs, outputs)       outputs: {name: array (B, ...)}, one row per sample

fit and evaluate average the loss and every log over an epoch, weighted by batch size: a
History holds "loss", the logs' names, their "val_" twins and "epoch_time" / "train_time";
evaluate also concatenates the outputs in data order (predictions, probabilities, labels …).
Without ``loss_fn``, fit and evaluate call ``model.loss(batch)``.

**One training step**, in this order:

    batch = the loader's next batch, moved to the device
    loss, logs, _ = loss_fn(model, batch)
    optimizer.zero_grad(); loss.backward()
    read the loss and logs from the device           one copy: one GPU synchronisation
    stop if the loss is nan or inf                   NonFiniteLossError naming epoch and batch
    callback.on_after_backward(model, step)          gradients are in p.grad
    optimizer.step()
    callback.on_batch_end(step, logs, model)

After each epoch: the parameters are checked to be finite, the validation set is evaluated,
the epoch's values are appended to the History, the checkpoint is written, and the
callbacks' ``on_epoch_end`` run (one returning True stops the training). A nan or inf loss
or parameter therefore stops fit before anything is written: the checkpoint of the last good
epoch stays as it was.

**Callbacks** are :class:`Callback` objects, or plain functions ``cb(epoch, logs, model)``
called at the end of each epoch. **Epochs** are numbered 1, 2, … wherever a user sees one:
the progress bar ("epoch 1/10"), ``History.epoch``, history.json, callbacks, error messages,
and a checkpoint's "epoch" (the number of epochs done). Only the loader's ``set_epoch(e)``
counts from 0, as PyTorch's samplers do.

**Reproducibility.** Epoch e's order is ``epoch_permutation(N, seed, e)`` and a transform's
random numbers come from (seed, epoch, batch index): both depend on nothing else. A
checkpoint written after every epoch (model, optimiser, history, epoch, config, fit
settings; atomically, via ``mm.save``) therefore lets ``fit(..., resume=True)`` continue and
reach bit for bit the parameters an uninterrupted run reaches.
"""
import math
import os
import sys
import time
import warnings

import numpy as np

from . import backend, optim
from ._io import write_json
from .autograd import Tensor, no_grad
from .data.loader import Loader
from .errors import UsageError
from .serialization import load, save


class NonFiniteLossError(FloatingPointError):
    """fit stopped because a loss (or, after an epoch, a parameter) was nan or inf; the
    optimiser step was not taken and no checkpoint was written."""


class Callback:
    """Hooks into :func:`fit`. Subclass it and override the hooks you need; each does nothing
    by default. ``step`` counts optimiser steps from 0 over the whole run (a resumed run
    continues the count).

        on_train_begin(model, optimizer)     before the first epoch (after a resume's load)
        on_after_backward(model, step)       the gradients are in p.grad, the optimiser step
                                             follows: all-reduce, clip or record them here
        on_batch_end(step, logs, model)      logs: {"loss": float, …} of this batch
        on_epoch_end(epoch, logs, model)     epoch 1, 2, …; logs: the values History gets;
                                             return True to stop the training
        on_train_end(history, model)         after the last epoch
    """

    def on_train_begin(self, model, optimizer):
        pass

    def on_after_backward(self, model, step):
        pass

    def on_batch_end(self, step, logs, model):
        pass

    def on_epoch_end(self, epoch, logs, model):
        pass

    def on_train_end(self, history, model):
        pass


class _EpochEnd(Callback):
    """A plain function ``cb(epoch, logs, model)`` as a Callback."""

    def __init__(self, fn):
        self.on_epoch_end = fn


class PrintEpochs(Callback):
    """One line per epoch on stderr ("epoch 2/10 loss 1.2345 …"): a run without a progress
    bar still shows life."""

    def __init__(self, epochs, keys=("loss", "accuracy", "val_loss", "val_accuracy",
                                     "epoch_time")):
        self.epochs, self.keys = epochs, keys

    def on_epoch_end(self, epoch, logs, model):
        print(f"epoch {epoch}/{self.epochs} " + "  ".join(
            f"{k} {logs[k]:.4f}" for k in self.keys if k in logs), file=sys.stderr)


# -- history ------------------------------------------------------------------------------------
class History:
    """What ``fit`` returns, as Keras' History: ``history`` maps a name to one value per
    epoch — "loss" and the loss function's logs (for the CIFAR-10 case study "accuracy",
    and with two heads or λ > 0 "class_loss", "super_loss", "super_accuracy", "reg_loss"),
    their "val_" twins, "epoch_time" (seconds, training and validation) and "train_time"
    (training only). ``epoch`` lists the epoch numbers 1, 2, …; ``val_result`` is the last
    epoch's full :func:`evaluate` result (not saved)."""

    def __init__(self, history=None):
        self.history = {k: [float(v) for v in np.atleast_1d(vals)]
                        for k, vals in (history or {}).items()}
        n = len(next(iter(self.history.values()))) if self.history else 0
        self.epoch = list(range(1, n + 1))
        self.val_result = None

    def append(self, logs):
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.epoch.append(len(self.epoch) + 1)

    def __len__(self):
        return len(self.epoch)

    def state_dict(self):
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()}

    def to_json(self, path):
        """Write ``{"epoch": [1, 2, …], name: [...]}`` atomically."""
        write_json({"epoch": self.epoch, **self.history}, path)

    def __repr__(self):
        return f"History({len(self)} epochs: {', '.join(self.history)})"


# -- fit ----------------------------------------------------------------------------------------
def fit(model, train, val=None, epochs=10, optimizer=None, *, loss_fn=None, batch_size=32,
        device="cpu", callbacks=(), progress=True, seed=0, checkpoint_path=None, resume=False,
        checkpoint_extra=None, eval_batch_size=256):
    """Train ``model`` with mini-batch gradient descent; return a :class:`History`.

    train, val:     Loaders or dicts of host arrays (module docstring); a dict ``train`` is
                    read in batches of ``batch_size``, shuffled by ``seed``, a dict ``val`` in
                    batches of ``eval_batch_size``. ``val`` is evaluated after every epoch.
    epochs:         the number of epochs in total (a resumed run counts the ones done).
    optimizer:      default ``optim.Adam(model.parameters(), lr=1e-3)``, the article's.
    loss_fn:        ``loss_fn(model, batch)`` (the loss contract above); default model.loss.
    device:         "cpu" or "cuda"; the model is moved there, the batches follow one by one.
    callbacks:      :class:`Callback` objects or functions ``cb(epoch, logs, model)``.
    progress:       a tqdm bar per epoch on stderr, and a short one for the validation.
    checkpoint_path: after every epoch, save {"model", "optimizer", "history", "epoch",
                    "config", "fit"} there atomically: "config" is ``model.config()`` (if the
                    model has one) updated with ``checkpoint_extra``; "fit" the settings that
                    decide the result — seed, batch_size and ``loss_fn.config()`` if it has one.
    resume:         continue from ``checkpoint_path`` (model, optimiser, history, epoch) up to
                    ``epochs`` in total; starts afresh, with a warning, if it is missing.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
    if resume and checkpoint_path is None:
        raise ValueError("fit: resume=True needs a checkpoint_path")
    device = backend.check_device(device)
    train = as_loader(train, batch_size, shuffle=True, seed=seed)
    val = as_loader(val, eval_batch_size, shuffle=False) if val is not None else None
    if len(train) == 0:
        raise ValueError(f"fit: the training data gives no batch ({train!r}); an empty "
                         f"training set would train nothing")
    loss_fn = _default_loss(model, loss_fn, "fit")
    model.to(device)
    if optimizer is None:
        optimizer = optim.Adam(model.parameters(), lr=1e-3)
    callbacks = [c if isinstance(c, Callback) else _EpochEnd(c) for c in callbacks or ()]
    settings = {"seed": train.seed, "batch_size": train.batch_size,
                **(loss_fn.config() if hasattr(loss_fn, "config") else {})}

    history, start = History(), 0
    if resume:
        history, start = _resume(checkpoint_path, model, optimizer, settings, epochs)
    for cb in callbacks:
        cb.on_train_begin(model, optimizer)
    for epoch in range(start + 1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        train.set_epoch(epoch - 1)
        bar = _progress(len(train), f"epoch {epoch}/{epochs}", progress)
        done = (f"; {checkpoint_path} still holds epoch {epoch - 1}" if checkpoint_path
                and epoch > 1 else "")
        logs, _ = _run_epoch(model, train, loss_fn, device, bar, optimizer, callbacks,
                             step=(epoch - 1) * len(train), where=(epoch, done))
        _check_parameters(model, epoch, done)
        train_time = time.perf_counter() - t0
        if val is not None:
            val_logs, outputs = _evaluate(model, val, loss_fn, progress,
                                          f"epoch {epoch}/{epochs} val")
            history.val_result = {**val_logs, **outputs}
            logs.update({"val_" + k: v for k, v in val_logs.items()})
        logs["epoch_time"] = time.perf_counter() - t0
        logs["train_time"] = train_time
        history.append(logs)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer, history, epoch, checkpoint_extra,
                            settings)
        if any([bool(cb.on_epoch_end(epoch, logs, model)) for cb in callbacks]):
            break
    for cb in callbacks:
        cb.on_train_end(history, model)
    return history


def as_loader(data, batch_size, shuffle, seed=0):
    """``data`` itself if it is a Loader, else ``Loader(data, batch_size, shuffle, seed)``."""
    return data if isinstance(data, Loader) else Loader(data, batch_size, shuffle, seed)


def _default_loss(model, loss_fn, op):
    if loss_fn is not None:
        return loss_fn
    if not callable(getattr(model, "loss", None)):
        raise TypeError(f"{op}: {type(model).__name__} has no loss(batch) method; pass "
                        f"loss_fn(model, batch) -> loss | (loss, logs) | (loss, logs, outputs)")
    return lambda model, batch: model.loss(batch)


def _run_epoch(model, loader, loss_fn, device, bar=None, optimizer=None, callbacks=(), step=0,
               where=None):
    """One pass over ``loader``: a training epoch with an ``optimizer``, an evaluation without.
    Returns (the loss and logs averaged over the samples, {name: outputs concatenated})."""
    sums, seen, outputs = {}, 0, {}
    for i, batch in enumerate(loader):
        B = len(next(iter(batch.values())))
        batch = {k: backend.to_device(v, device) for k, v in batch.items()}
        loss, logs, outs = _call(loss_fn, model, batch)
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
        values = _read(loss, logs)                  # the step's one read from the device
        if optimizer is not None:
            if not math.isfinite(values["loss"]):
                epoch, done = where
                raise NonFiniteLossError(
                    f"fit: the loss is {values['loss']} at epoch {epoch}, batch {i + 1} of "
                    f"{len(loader)}; stopped before the optimiser step{done}. A smaller "
                    f"learning rate often helps; also check the data for nan or inf")
            for cb in callbacks:
                cb.on_after_backward(model, step + i)
            optimizer.step()
            for cb in callbacks:
                cb.on_batch_end(step + i, values, model)
        else:                                       # evaluation: keep the outputs
            for name, value in outs.items():
                outputs.setdefault(name, []).append(backend.unwrap(value))
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value * B
        seen += B
        if bar is not None:
            bar.update(1)
            if i % 10 == 0 or i == len(loader) - 1:
                bar.set_postfix(_shown(sums, seen))
    if bar is not None:
        bar.close()
    means = {name: total / seen for name, total in sums.items()}
    return means, {name: backend.to_numpy(backend.get_array_module(*parts).concatenate(parts))
                   for name, parts in outputs.items()}


def _call(loss_fn, model, batch):
    """(loss, logs, outputs) from whichever of the three forms ``loss_fn`` returns."""
    out = loss_fn(model, batch)
    out = out if isinstance(out, tuple) else (out,)
    if not 1 <= len(out) <= 3:
        raise TypeError(f"loss_fn must return loss, (loss, logs) or (loss, logs, outputs), got "
                        f"a tuple of {len(out)}")
    loss, logs, outputs = (*out, None, None)[:3]
    if not isinstance(loss, Tensor) or loss.size != 1:
        raise TypeError(f"loss_fn must return a scalar Tensor as the loss (the batch mean), got "
                        f"{type(loss).__name__} {getattr(loss, 'shape', '')}")
    return loss, dict(logs or {}), dict(outputs or {})


def _read(loss, logs):
    """{"loss": float, name: float, …}: the loss and every log value that is still on the
    device copied to the host together (each separate read would be a GPU synchronisation)."""
    values = {"loss": loss, **logs}
    out, arrays = {}, {}
    for name, value in values.items():
        if isinstance(value, (int, float, np.generic)):
            out[name] = float(value)
        else:
            arrays[name] = backend.unwrap(value)
    if arrays:
        xp = backend.get_array_module(*arrays.values())
        host = backend.to_numpy(xp.stack([xp.asarray(a, dtype=xp.float64).reshape(())
                                          for a in arrays.values()]))
        out.update(zip(arrays, host.tolist()))
    return {name: out[name] for name in values}


def _shown(sums, seen):
    """The progress bar's running means: the loss, and the accuracy if there is one."""
    shown = {"loss": f"{sums['loss'] / seen:.4f}"}
    if "accuracy" in sums:
        shown["acc"] = f"{sums['accuracy'] / seen:.3f}"
    return shown


def _check_parameters(model, epoch, done):
    """The last step of an epoch may turn the parameters into nan or inf with a finite loss:
    refuse to checkpoint them. One reduction over all parameters, one read."""
    params = [(name, p) for name, p in model.named_parameters()]
    if not params:
        return
    xp = backend.get_array_module(params[0][1])
    finite = backend.to_numpy(xp.stack([xp.isfinite(p.data).all() for _, p in params]))
    if not finite.all():
        bad = [name for (name, _), ok in zip(params, finite) if not ok]
        raise NonFiniteLossError(f"fit: after epoch {epoch} the parameters {bad[:5]} hold nan or "
                                 f"inf, though every loss was finite; stopped before "
                                 f"checkpointing{done}. A smaller learning rate often helps")


def _progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, leave=True,
                dynamic_ncols=True, mininterval=0.5)


# -- checkpoints --------------------------------------------------------------------------------
def save_checkpoint(path, model, optimizer, history, epoch, extra=None, settings=None):
    """mm.save of {"model", "optimizer", "history", "epoch", "config", "fit"} (atomic)."""
    config = dict(model.config()) if hasattr(model, "config") else {}
    config.update(extra or {})
    save({"model": model, "optimizer": optimizer, "history": history.state_dict(),
          "epoch": int(epoch), "config": config, "fit": dict(settings or {})}, path)


def load_checkpoint(path):
    """The checkpoint at ``path`` as a dict; a :class:`UsageError` naming the file when it is
    missing or not a minimm checkpoint."""
    try:
        ckpt = load(path)
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise UsageError(f"cannot read the checkpoint {os.fspath(path)}: {e}") from e
    if not isinstance(ckpt.get("model"), dict):
        raise UsageError(f"{os.fspath(path)} is an mm.save file but not a training checkpoint "
                         f"(no 'model' weights; it has {sorted(ckpt)})")
    return ckpt


def restore(ckpt, model, optimizer=None, source="the checkpoint"):
    """Load a checkpoint's weights (and optimiser state) into ``model`` (and ``optimizer``).
    A :class:`UsageError` when the checkpoint was written for another model: its config
    disagrees with ``model.config()``, or its weights do not fit."""
    if hasattr(model, "config"):
        saved = ckpt.get("config", {})
        differ = {k: (saved.get(k, "missing"), v) for k, v in model.config().items()
                  if saved.get(k) != v}
        if differ:
            raise UsageError(f"{source} holds another model than {type(model).__name__} with "
                             f"this configuration: {differ} (saved, here)")
    try:
        model.load_state_dict(ckpt["model"])
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, ValueError, TypeError) as e:
        raise UsageError(f"{source} does not fit {type(model).__name__}: {e}") from e


def _resume(path, model, optimizer, settings, epochs):
    if not os.path.exists(path):
        warnings.warn(f"fit: resume=True but no checkpoint at {path}; training from the start",
                      stacklevel=3)
        return History(), 0
    ckpt = load_checkpoint(path)
    restore(ckpt, model, optimizer, source=f"fit: cannot resume: {path}")
    start = int(ckpt.get("epoch", 0))
    if start > epochs:
        raise UsageError(f"fit: {path} has done {start} epochs, more than epochs={epochs} "
                         f"(epochs counts the total, resumed ones included)")
    saved = ckpt.get("fit", {})
    changed = {k: (saved[k], v) for k, v in settings.items() if k in saved and saved[k] != v}
    if changed:
        warnings.warn(f"fit: resuming {path} with changed settings {changed} (saved, now): "
                      f"the result will differ from an uninterrupted run", stacklevel=3)
    return History(ckpt.get("history")), start


# -- evaluate -----------------------------------------------------------------------------------
def evaluate(model, data, loss_fn=None, batch_size=256, *, progress=False, desc="evaluate"):
    """Run ``model`` over ``data`` in order (eval mode, no gradients) and return a dict: "loss"
    and every log of ``loss_fn`` averaged over the samples, and every output concatenated
    over the batches (for the CIFAR-10 case study: "accuracy", "probabilities",
    "predictions", "labels" …). The device is the model's."""
    logs, outputs = _evaluate(model, data, loss_fn, progress, desc, batch_size)
    return {**logs, **outputs}


def _evaluate(model, data, loss_fn, progress, desc, batch_size=256):
    loader = as_loader(data, batch_size, shuffle=False)
    if len(loader) == 0:
        raise ValueError(f"evaluate: the data is empty ({loader!r})")
    loss_fn = _default_loss(model, loss_fn, "evaluate")
    params = model.parameters()
    device = params[0].device if params else "cpu"
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad():
            logs, outputs = _run_epoch(model, loader, loss_fn, device,
                                       _progress(len(loader), desc, progress))
    finally:
        model.train(was_training)
    clash = sorted(set(logs) & set(outputs))
    if clash:
        raise ValueError(f"evaluate: {clash} are both logs and outputs of the loss function")
    return logs, outputs


__all__ = ["fit", "evaluate", "History", "Callback", "PrintEpochs", "NonFiniteLossError",
           "as_loader", "save_checkpoint", "load_checkpoint", "restore"]
