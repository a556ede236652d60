"""Layer 6: training and evaluation — the article's §3.2 step 5 ("train with cross-entropy
and gradient descent") and the ``model.fit(...)`` of its §4.3 / §5.2 code, made explicit.

    history = fit(model, train, val_data=test, epochs=10, batch_size=32)   # Adam, lr 1e-3
    history.history["accuracy"], history.history["val_accuracy"]        # §5.4 curves
    result = evaluate(model, test)        # loss, accuracy, predictions, probabilities

Data is a dict of host (NumPy) arrays sharing their first dimension::

    {"images": uint8 (N, 3, 32, 32), "ids": int (N, T), "lengths": int (N,),
     "labels": int (N,), "superlabels": int (N,)}        # superlabels only for two heads

or the tuple ``(images, ids, lengths, labels[, superlabels])``; a key the model does not
use may be missing (no captions for an image-only model). Each mini-batch is taken on the
host, moved to the device, and uint8 images are normalised there
(:func:`minimm.data.normalize_images`) — so the whole dataset never exists in float32.

The objective: with one head and λ = 0, the mean cross-entropy; otherwise the article's
formula (3), ``F.multitask_loss`` — L(θ) = Σ_i w_i ℓ_i + λ R(θ), the tasks being "class"
(10 CIFAR classes) and "super" (vehicle / animal).

Reproducibility: each epoch's sample order is a permutation drawn from
``default_rng((seed, epoch))``, so it depends only on the seed and the epoch's number. A
checkpoint written after every epoch (model, optimiser, history, epoch, config; atomic, via
``mm.save``) therefore lets ``fit(..., resume=True)`` continue and reach bit-for-bit the
parameters an uninterrupted run reaches.
"""
import json
import os
import sys
import time
import warnings

import numpy as np

from . import backend, optim
from ._io import atomic_write
from . import functional as F
from .autograd import Tensor, no_grad
from .data.loader import normalize_images, num_batches
from .serialization import load, save

DATA_KEYS = ("images", "ids", "lengths", "labels", "superlabels")


# -- data ---------------------------------------------------------------------------------------
def as_dataset(data, op="fit"):
    """A dict of NumPy arrays from a dict or an ``(images, ids, lengths, labels[, superlabels])``
    tuple; checks that "labels" is there and every array has the same length."""
    if isinstance(data, dict):
        unknown = set(data) - set(DATA_KEYS)
        if unknown:
            raise ValueError(f"{op}: unknown data keys {sorted(unknown)}; expected some of "
                             f"{DATA_KEYS}")
        items = data.items()
    elif isinstance(data, (tuple, list)):
        if len(data) not in (4, 5):
            raise ValueError(f"{op}: a data tuple is (images, ids, lengths, labels[, "
                             f"superlabels]), got {len(data)} items")
        items = zip(DATA_KEYS, data)
    else:
        raise TypeError(f"{op}: data must be a dict or a tuple of arrays, got "
                        f"{type(data).__name__}")
    out = {k: backend.to_numpy(v)
           for k, v in items if v is not None}
    out = {k: np.asarray(v) for k, v in out.items()}
    if "labels" not in out:
        raise ValueError(f"{op}: the data has no 'labels'")
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in out.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise ValueError(f"{op}: data arrays must share their first dimension, got "
                         + ", ".join(f"{k} {tuple(out[k].shape)}" for k in out))
    return out


def caption_dataset(images, labels, caption_seed=0, vocab=None, max_len=16, superlabels=False,
                    p_true=None, p_wrong=None):
    """The §4.3 inputs for CIFAR-10 images: {"images", "ids", "lengths", "labels"} (and
    "superlabels", vehicle 0 / animal 1, if asked), with one synthetic, seeded, noisy caption
    per image (:func:`minimm.data.make_captions`) encoded with ``vocab`` (default
    :func:`minimm.data.caption_vocabulary`), padded after the words to ``max_len``."""
    from .data import captions, cifar10
    vocab = vocab if vocab is not None else captions.caption_vocabulary()
    labels = np.asarray(labels).astype(np.int64)
    noise = {k: v for k, v in (("p_true", p_true), ("p_wrong", p_wrong)) if v is not None}
    text = captions.make_captions(labels, seed=caption_seed, **noise)
    ids, lengths = captions.encode(text, vocab, max_len=max_len)
    data = {"images": images, "ids": ids, "lengths": lengths, "labels": labels}
    if superlabels:
        data["superlabels"] = cifar10.superclass(labels)
    return data


def epoch_permutation(n, seed, epoch):
    """The sample order of epoch ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng((int(seed), int(epoch))).permutation(n)


def _batch(data, idx, device):
    """Host rows ``idx`` of every array, moved to ``device``; images normalised there."""
    batch = {}
    for key, a in data.items():
        part = a[idx]
        if key == "lengths":
            batch[key] = part                       # the LSTM reads lengths on the host
        elif key == "images":
            part = backend.to_device(part, device)
            xp = backend.get_array_module(part)
            batch[key] = Tensor(normalize_images(part) if part.dtype == np.uint8
                                else part.astype(xp.float32, copy=False))
        else:
            batch[key] = backend.to_device(part, device)
    return batch


def _outputs(model, batch):
    out = model(batch.get("images"), batch.get("ids"), batch.get("lengths"))
    return out if isinstance(out, tuple) else (out, None)


def _objective(model, outputs, batch, lam, task_weights, R=None):
    """(total loss, {"class": ℓ, "super": ℓ, "reg": λR}) for one batch, as Tensors."""
    logits, super_logits = outputs
    tasks = {"class": F.cross_entropy(logits, batch["labels"])}
    if super_logits is not None:
        if "superlabels" not in batch:
            raise ValueError("fit/evaluate: the model has a superclass head but the data "
                             "has no 'superlabels'")
        tasks["super"] = F.cross_entropy(super_logits, batch["superlabels"])
    if len(tasks) == 1 and lam == 0.0 and not task_weights:
        return tasks["class"], tasks
    # R(θ) is only built when it counts: λ = 0 passes no parameters (no wasted backward)
    params = (model if lam > 0.0 else []) if R is None else []
    total, terms = F.multitask_loss(tasks, params, lam, weights=task_weights,
                                    return_terms=True)
    if R is not None and lam > 0.0:              # evaluation: λR(θ) computed once, added
        terms["reg"] = R * lam
        total = total + terms["reg"]
    tasks["reg"] = terms["reg"]
    return total, tasks


# -- history ------------------------------------------------------------------------------------
class History:
    """What ``fit`` returns, as Keras' History: ``history`` maps a name to one value per
    epoch — "loss", "accuracy", "val_loss", "val_accuracy", "epoch_time" (seconds, training
    and validation), "train_time" (seconds, training only), and with two heads or λ > 0 the
    parts: "class_loss", "super_loss", "super_accuracy", "reg_loss" and their "val_" twins.
    ``epoch`` lists the epoch numbers; ``val_result`` is the last epoch's full
    :func:`evaluate` result (not saved)."""

    def __init__(self, history=None):
        self.history = {k: [float(v) for v in np.atleast_1d(vals)]
                        for k, vals in (history or {}).items()}
        n = len(next(iter(self.history.values()))) if self.history else 0
        self.epoch = list(range(n))
        self.val_result = None

    def append(self, logs):
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.epoch.append(len(self.epoch))

    def __len__(self):
        return len(self.epoch)

    def state_dict(self):
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()}

    def to_json(self, path):
        """Write ``{"epoch": [...], name: [...]}`` atomically."""
        write_json({"epoch": self.epoch, **self.history}, path)

    def __repr__(self):
        return f"History({len(self)} epochs: {', '.join(self.history)})"


def write_json(obj, path):
    """json.dump to a temporary file in the same folder, then os.replace (atomic)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")

# -- fit ----------------------------------------------------------------------------------------
def _progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, leave=True,
                dynamic_ncols=True, mininterval=0.5)


def fit(model, train_data, val_data=None, epochs=10, batch_size=32, optimizer=None, lam=0.0,
        task_weights=None, device="cpu", callbacks=None, progress=True, seed=0,
        checkpoint_path=None, resume=False, checkpoint_extra=None, eval_batch_size=256):
    """Train ``model`` with mini-batch gradient descent; return a :class:`History`.

    model:          called as ``model(images, ids, lengths)`` -> logits or (logits,
                    super_logits) — :class:`minimm.models.MultiModalModel`.
    train_data, val_data: dicts or tuples of host arrays (module docstring); validation runs
                    after every epoch (eval mode, no gradients).
    optimizer:      default ``optim.Adam(model.parameters(), lr=1e-3)``, the article's.
    lam, task_weights: λ and the w_i of L = Σ w_i ℓ_i + λ R(θ) (``F.multitask_loss``).
    device:         "cpu" or "cuda"; the model is moved there, batches follow one by one.
    callbacks:      callables ``cb(epoch, logs, model)`` run after each epoch (``logs`` =
                    that epoch's values); one returning True stops the training.
    progress:       a tqdm bar per epoch, on stderr.
    seed:           the shuffling seed (each epoch's order from (seed, epoch)).
    checkpoint_path: after every epoch, save {"model", "optimizer", "history", "epoch",
                    "config", "fit"} there atomically; "config" is ``model.config()`` (if
                    the model has one) updated with ``checkpoint_extra``.
    resume:         continue from ``checkpoint_path`` (model, optimiser, history, epoch) up
                    to ``epochs`` in total; starts afresh, with a warning, if it is missing.
    """
    lam = float(lam)
    if lam < 0:
        raise ValueError(f"fit: lam must be >= 0, got {lam}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"fit: batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
    if resume and checkpoint_path is None:
        raise ValueError("fit: resume=True needs a checkpoint_path")
    device = backend.check_device(device)
    train = as_dataset(train_data, "fit")
    val = as_dataset(val_data, "fit") if val_data is not None else None
    model.to(device)
    if optimizer is None:
        optimizer = optim.Adam(model.parameters(), lr=1e-3)
    settings = {"seed": int(seed), "batch_size": int(batch_size), "lam": lam}

    history, start = History(), 0
    if resume:
        if os.path.exists(checkpoint_path):
            ckpt = load(checkpoint_path)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            history = History(ckpt.get("history"))
            start = int(ckpt["epoch"])
            saved = ckpt.get("fit", {})
            changed = {k: (saved[k], v) for k, v in settings.items()
                       if k in saved and saved[k] != v}
            if changed:
                warnings.warn(f"fit: resuming {checkpoint_path} with changed settings "
                              f"{changed} (saved, now): the result will differ from an "
                              f"uninterrupted run", stacklevel=2)
        else:
            warnings.warn(f"fit: resume=True but no checkpoint at {checkpoint_path}; "
                          f"training from the start", stacklevel=2)

    n = len(train["labels"])
    steps = num_batches(n, batch_size)
    for epoch in range(start, epochs):
        model.train()
        t0 = time.perf_counter()
        order = epoch_permutation(n, seed, epoch)
        sums = {}                                      # name -> Σ (batch mean × batch size)
        correct = {"class": 0, "super": 0}
        bar = _progress(steps, f"epoch {epoch + 1}/{epochs}", progress)
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            batch = _batch(train, idx, device)
            outputs = _outputs(model, batch)
            total, parts = _objective(model, outputs, batch, lam, task_weights)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()

            B = len(idx)
            sums["loss"] = sums.get("loss", 0.0) + total.item() * B
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.item()) * B
            correct["class"] += _correct(outputs[0], batch["labels"])
            if outputs[1] is not None:
                correct["super"] += _correct(outputs[1], batch["superlabels"])
            if bar is not None:
                bar.update(1)
                if i % 10 == 0 or i == steps - 1:
                    seen = min((i + 1) * batch_size, n)
                    bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}",
                                    acc=f"{correct['class'] / seen:.3f}")

        train_time = time.perf_counter() - t0
        logs = {"loss": sums.get("loss", 0.0) / max(n, 1),
                "accuracy": correct["class"] / max(n, 1)}
        multi = "super" in sums or "reg" in sums      # two heads or λ > 0: log the parts
        if multi:
            logs.update(_part_logs(sums, correct, n, "super" in sums))
        if val is not None:
            result = evaluate(model, val, eval_batch_size, lam=lam, task_weights=task_weights)
            history.val_result = result
            logs["val_loss"], logs["val_accuracy"] = result["loss"], result["accuracy"]
            if multi:
                for key in ("class_loss", "super_loss", "super_accuracy", "reg_loss"):
                    if key in result:
                        logs["val_" + key] = result[key]
        logs["epoch_time"] = time.perf_counter() - t0
        logs["train_time"] = train_time
        if bar is not None:
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()
                             if k in ("loss", "accuracy", "val_loss", "val_accuracy")})
            bar.close()
        history.append(logs)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer, history, epoch + 1,
                            checkpoint_extra, settings)
        if callbacks and any([bool(cb(epoch, logs, model)) for cb in callbacks]):
            break
    return history


def _correct(logits, labels):
    predicted = logits.data.argmax(axis=1)
    return int((predicted == labels).sum())


def _part_logs(sums, correct, n, has_super):
    logs = {"class_loss": sums["class"] / n}
    if has_super:
        logs["super_loss"] = sums["super"] / n
        logs["super_accuracy"] = correct["super"] / n
    if "reg" in sums:
        logs["reg_loss"] = sums["reg"] / n
    return logs


def save_checkpoint(path, model, optimizer, history, epoch, extra=None, settings=None):
    """mm.save of {"model", "optimizer", "history", "epoch", "config", "fit"} (atomic)."""
    config = dict(model.config()) if hasattr(model, "config") else {}
    config.update(extra or {})
    save({"model": model, "optimizer": optimizer, "history": history.state_dict(),
          "epoch": int(epoch), "config": config, "fit": dict(settings or {})}, path)


# -- evaluate -----------------------------------------------------------------------------------
def evaluate(model, data, batch_size=256, lam=0.0, task_weights=None):
    """Run ``model`` (eval mode, no gradients) over ``data`` in order; return a dict:

        loss            the objective as in training (mean cross-entropy; with two heads or
                        λ > 0, Σ w_i ℓ_i + λ R(θ))
        accuracy        of the class head;  class_loss  its mean cross-entropy
        predictions     int64 (N,) argmax classes;  probabilities  float32 (N, classes) softmax
        labels          the true labels (N,)
    and with a superclass head also super_loss, super_accuracy, super_predictions,
    super_probabilities, superlabels; with λ > 0 reg_loss = λ R(θ). The device is the model's.
    """
    data = as_dataset(data, "evaluate")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be a positive integer, got {batch_size!r}")
    params = model.parameters()
    device = params[0].device if params else "cpu"
    was_training = getattr(model, "training", False)
    model.eval()
    n = len(data["labels"])
    if n == 0:
        raise ValueError("evaluate: the data is empty")
    sums, probs, super_probs = {}, [], []
    with no_grad():
        R = F.l2_penalty(model) if lam > 0 else None
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(start + batch_size, n))
            batch = _batch(data, idx, device)
            outputs = _outputs(model, batch)
            total, parts = _objective(model, outputs, batch, lam, task_weights, R=R)
            B = len(idx)
            sums["loss"] = sums.get("loss", 0.0) + total.item() * B
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.item()) * B
            probs.append(backend.to_numpy(F.softmax(outputs[0], axis=-1).data))
            if outputs[1] is not None:
                super_probs.append(backend.to_numpy(F.softmax(outputs[1], axis=-1).data))
    model.train(was_training)
    labels = data["labels"].astype(np.int64)
    P = np.concatenate(probs)
    result = {"loss": sums["loss"] / n, "class_loss": sums["class"] / n,
              "predictions": P.argmax(axis=1).astype(np.int64),
              "probabilities": P, "labels": labels}
    result["accuracy"] = float((result["predictions"] == labels).mean())
    if super_probs:
        S = np.concatenate(super_probs)
        result.update(super_loss=sums["super"] / n, super_probabilities=S,
                      super_predictions=S.argmax(axis=1).astype(np.int64))
        if "superlabels" in data:
            result["superlabels"] = data["superlabels"].astype(np.int64)
            result["super_accuracy"] = float((result["super_predictions"]
                                              == result["superlabels"]).mean())
    if "reg" in sums:
        result["reg_loss"] = sums["reg"] / n
    return result


__all__ = ["fit", "evaluate", "History", "as_dataset", "caption_dataset", "epoch_permutation",
           "save_checkpoint", "write_json"]
