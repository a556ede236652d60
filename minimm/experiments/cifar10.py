"""The article's case study (§4.3 / §5.2): CIFAR-10 images with synthetic captions, the CNN +
LSTM model fused by concatenation, trained by :func:`minimm.train.fit`.

What the case study adds to the generic training loop, each one piece here:

    caption_dataset(images, labels)   the inputs: {"images", "ids", "lengths", "labels"[,
                                      "superlabels"]} with one seeded, noisy caption per image
    model_inputs(batch)               the batch transform: uint8 images -> normalised float32
                                      on the device (so the data set stays uint8, 4× smaller)
    Objective(lam, task_weights)      the loss function: formula (3), L = Σ_i w_i ℓ_i + λ R(θ),
                                      over the class head and the optional superclass head
    metrics_json(result, config)      metrics.json: accuracy, per task, F1, AUC, confusion
    train(args) / evaluate(args, ckpt) the ``train`` and ``evaluate`` commands

``python -m minimm train --model multimodal | image | text`` trains :class:`MultiModalModel`
in that mode; another model of the same call (``model(images, ids, lengths) -> logits`` or
``(logits, super_logits)``) joins with one :func:`register_model` call.
"""
import functools
import math
import os
import sys
import time

import numpy as np

from .. import distributed
from .. import functional as F
from .. import optim
from .._io import write_json
from ..autograd import Tensor, no_grad
from ..backend import get_array_module
from ..data import captions, cifar10
from ..data.loader import normalize_images
from ..errors import UsageError
from ..models import MultiModalModel
from ..models.multimodal import MODES
from ..train import PrintEpochs, evaluate as evaluate_model, fit, load_checkpoint, restore
from . import int_in, non_negative_float, non_negative_int, positive_int, register

DATA_KEYS = ("images", "ids", "lengths", "labels", "superlabels")
QUICK_TRAIN, QUICK_TEST = 2000, 500
MAX_LEN = int_in(1, 256)          # the --max-len type


# -- data ---------------------------------------------------------------------------------------
def as_dataset(data, op="cifar10"):
    """A dict of NumPy arrays from a dict or an ``(images, ids, lengths, labels[, superlabels])``
    tuple; checks the keys and that "labels" is there."""
    if isinstance(data, (tuple, list)):
        if len(data) not in (4, 5):
            raise ValueError(f"{op}: a data tuple is (images, ids, lengths, labels[, "
                             f"superlabels]), got {len(data)} items")
        data = dict(zip(DATA_KEYS, data))
    if not isinstance(data, dict):
        raise TypeError(f"{op}: data must be a dict or a tuple of arrays, got "
                        f"{type(data).__name__}")
    unknown = set(data) - set(DATA_KEYS)
    if unknown:
        raise ValueError(f"{op}: unknown data keys {sorted(unknown)}; expected some of "
                         f"{DATA_KEYS}")
    if data.get("labels") is None:
        raise ValueError(f"{op}: the data has no 'labels'")
    return {k: np.asarray(v) for k, v in data.items() if v is not None}


def caption_dataset(images, labels, caption_seed=0, vocab=None, max_len=16, superlabels=False,
                    p_true=None, p_wrong=None):
    """The §4.3 inputs for CIFAR-10 images: {"images", "ids", "lengths", "labels"} (and
    "superlabels", vehicle 0 / animal 1, if asked), with one synthetic, seeded, noisy caption
    per image (:func:`minimm.data.make_captions`) encoded with ``vocab`` (default
    :func:`minimm.data.caption_vocabulary`), padded after the words to ``max_len``. With
    ``images=None``, no "images" key (data for a text-only model)."""
    vocab = vocab if vocab is not None else captions.caption_vocabulary()
    labels = np.asarray(labels).astype(np.int64)
    noise = {k: v for k, v in (("p_true", p_true), ("p_wrong", p_wrong)) if v is not None}
    text = captions.make_captions(labels, seed=caption_seed, **noise)
    ids, lengths = captions.encode(text, vocab, max_len=max_len)
    data = {"images": images, "ids": ids, "lengths": lengths, "labels": labels}
    if superlabels:
        data["superlabels"] = cifar10.superclass(labels)
    return {k: v for k, v in data.items() if v is not None}


def model_inputs(batch):
    """(images, ids, lengths) for ``model(images, ids, lengths)`` from a batch on the device:
    uint8 images normalised there (:func:`minimm.data.normalize_images`), float images made
    float32; a missing key gives None (a text-only model needs no images)."""
    images = batch.get("images")
    if images is not None:
        xp = get_array_module(images)
        images = Tensor(normalize_images(images) if images.dtype == np.uint8
                        else images.astype(xp.float32, copy=False))
    return images, batch.get("ids"), batch.get("lengths")


# -- the loss -----------------------------------------------------------------------------------
class Objective:
    """The case study's loss function for :func:`minimm.train.fit`, the article's formula (3):

        L(θ) = Σ_i w_i ℓ_i + λ R(θ)         ℓ_class, and ℓ_super with a superclass head

    each ℓ_i a mean cross-entropy, R(θ) the L2 penalty (``F.multitask_loss``). With one head,
    λ = 0 and no weights it is the plain mean cross-entropy. ``objective(model, batch)`` returns
    (L, logs, outputs): logs "accuracy", and with two heads or λ > 0 also "class_loss",
    "super_loss", "super_accuracy", "reg_loss" (= λR); outputs "probabilities" (softmax),
    "predictions", "labels" and their "super_" twins.
    """

    def __init__(self, lam=0.0, task_weights=None):
        lam = float(lam)
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"cifar10.Objective: lam must be a finite number >= 0, got {lam}")
        self.lam, self.task_weights = lam, dict(task_weights) if task_weights else None

    def config(self):
        """What decides the result, saved with a checkpoint's fit settings."""
        return {"lam": self.lam, **({"task_weights": self.task_weights}
                                    if self.task_weights else {})}

    @classmethod
    def from_config(cls, config):
        return cls(config.get("lam", 0.0), config.get("task_weights"))

    def __call__(self, model, batch):
        if "labels" not in batch:
            raise ValueError("cifar10.Objective: the batch has no 'labels'")
        out = model(*model_inputs(batch))
        logits, super_logits = out if isinstance(out, tuple) else (out, None)
        tasks = {"class": F.cross_entropy(logits, batch["labels"])}
        outputs = _predictions(logits, batch["labels"], "")
        logs = {"accuracy": _accuracy(outputs)}
        if super_logits is not None:
            if "superlabels" not in batch:
                raise ValueError("cifar10.Objective: the model has a superclass head but the "
                                 "data has no 'superlabels'")
            tasks["super"] = F.cross_entropy(super_logits, batch["superlabels"])
            outputs.update(_predictions(super_logits, batch["superlabels"], "super_"))
        if len(tasks) == 1 and self.lam == 0.0 and not self.task_weights:
            return tasks["class"], logs, outputs
        # R(θ) is only built when it counts: λ = 0 passes no parameters (no wasted backward)
        total, terms = F.multitask_loss(tasks, model if self.lam > 0.0 else [], self.lam,
                                        weights=self.task_weights, return_terms=True)
        logs["class_loss"] = tasks["class"]
        if "super" in tasks:
            logs["super_loss"] = tasks["super"]
            logs["super_accuracy"] = _accuracy(outputs, "super_")
        logs["reg_loss"] = terms["reg"]
        return total, logs, outputs


def _predictions(logits, labels, prefix):
    with no_grad():
        P = F.softmax(logits, axis=-1).data
    labels_name = "superlabels" if prefix else "labels"
    return {prefix + "probabilities": P, prefix + "predictions": P.argmax(axis=1),
            labels_name: labels}


def _accuracy(outputs, prefix=""):
    labels = outputs["superlabels" if prefix else "labels"]
    return (outputs[prefix + "predictions"] == labels).mean()


# -- the models of this case study --------------------------------------------------------------
MODELS = {}   # --model name -> (build(args, vocab_size, rng) -> model, rebuild(config) -> model)


def register_model(name, build, rebuild):
    """Make ``python -m minimm train --model name`` train ``build(args, vocab_size, rng)`` in
    this case study (captioned CIFAR-10, :class:`Objective`, its metrics and plots), and
    ``evaluate`` rebuild it from a checkpoint's config with ``rebuild(config)``. The model is
    called as ``model(images, ids, lengths)`` -> logits, or (logits, super_logits) when its
    ``multitask`` attribute is True, and has ``config()`` with at least "num_classes"."""
    MODELS[name] = (build, rebuild)
    register(name, sys.modules[__name__])


def _multimodal(mode):
    def build(args, vocab_size, rng):
        return MultiModalModel(vocab_size, 10, mode, 2 if args.multitask else None, rng=rng)
    return build


for _mode in MODES:
    register_model(_mode, _multimodal(_mode), MultiModalModel.from_config)


# -- metrics and plots --------------------------------------------------------------------------
def metrics_json(result, config):
    """metrics.json's numbers from an :func:`minimm.train.evaluate` result of :class:`Objective`."""
    from .. import metrics
    y = result["labels"]
    summary = metrics.classification_summary(y, result["probabilities"], config["num_classes"])
    animal = cifar10.superclass(np.arange(config["num_classes"])) == 1
    superlabels = cifar10.superclass(y)
    if "super_probabilities" in result:           # the second head's own answer
        super_pred = result["super_predictions"]
        super_score = result["super_probabilities"][:, 1]
    else:                                         # the class head's, mapped to its superclass
        super_pred = animal[result["predictions"]].astype(np.int64)
        super_score = result["probabilities"][:, animal].sum(axis=1)
    super_accuracy = metrics.accuracy(superlabels, super_pred)
    super_auc = (metrics.roc_auc_score(superlabels, super_score)
                 if 0 < superlabels.sum() < len(superlabels) else float("nan"))
    # the accuracy as fit logged it (val_accuracy), so that the two files agree exactly
    out = {"test_accuracy": result["accuracy"], "test_loss": float(result["loss"]),
           "task_accuracy": {"class": result["accuracy"], "superclass": super_accuracy},
           "superclass_source": "super_head" if "super_probabilities" in result else "class_head",
           "superclass_auc": super_auc,
           "macro_f1": summary["macro_f1"], "macro_auc": summary["macro_auc"]}
    out.update({k: v for k, v in summary.items() if k != "accuracy"})
    return out


def epoch_seconds(history):
    """The run's times for metrics.json from fit's History: "seconds" (all epochs, evaluation
    included), "seconds_per_epoch" and "train_seconds_per_epoch" (the training loop only)."""
    epoch_times = history.history.get("epoch_time", [])
    train_times = history.history.get("train_time", [])
    return {"seconds": float(sum(epoch_times)),
            "seconds_per_epoch": float(np.mean(epoch_times)) if len(epoch_times) else None,
            "train_seconds_per_epoch": float(np.mean(train_times)) if len(train_times) else None}


def write_run(history, metrics, folder, plots=None):
    """history.json, metrics.json and the plots (``plots``, default :func:`write_plots`) of one
    run, into ``folder``; every file is written atomically."""
    history.to_json(os.path.join(folder, "history.json"))
    write_json(metrics, os.path.join(folder, "metrics.json"))
    (plots or write_plots)(history, metrics, folder)


def write_plots(history, metrics, folder, val_label="test"):
    """accuracy.png and loss.png (train vs test per epoch; ``val_label`` names the held-out
    curve) and confusion.png into ``folder``; a warning instead when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("warning: matplotlib is not installed, accuracy.png, loss.png and confusion.png "
              "were not written (pip install 'minimm[notebooks]')", file=sys.stderr)
        return
    from .. import plot
    name = metrics["model"]
    if len(history):
        plot.plot_accuracy(history, os.path.join(folder, "accuracy.png"),
                           title=f"{name} model: accuracy (train vs test)",
                           val_label=val_label)
        plot.plot_loss(history, os.path.join(folder, "loss.png"),
                       title=f"{name} model: loss (train vs test)", val_label=val_label)
    plot.plot_confusion_matrix(metrics["confusion_matrix"], cifar10.CLASSES,
                               os.path.join(folder, "confusion.png"),
                               title=f"{name} model: test confusion matrix")


def summary(metrics):
    """A few readable lines: the headline numbers and a per-class table."""
    head = " + superclass head" if metrics.get("multitask") else ""
    lines = [f"{metrics['model']} model{head}, {metrics['epochs']} epoch(s), "
             f"{metrics['test_samples']} test images ({metrics.get('checkpoint', 'this run')})",
             f"test accuracy {_f(metrics['test_accuracy'])}   macro F1 {_f(metrics['macro_f1'])}"
             f"   macro AUC {_f(metrics['macro_auc'])}   superclass accuracy "
             f"{_f(metrics['task_accuracy']['superclass'])} (from the "
             f"{metrics['superclass_source'].replace('_', ' ')})",
             f"{'class':<12}{'precision':>10}{'recall':>8}{'F1':>8}"]
    for name, p, r, f1 in zip(cifar10.CLASSES, metrics["per_class_precision"],
                              metrics["per_class_recall"], metrics["per_class_f1"]):
        lines.append(f"{name:<12}{_f(p, 3):>10}{_f(r, 3):>8}{_f(f1, 3):>8}")
    return "\n".join(lines)


def _f(value, digits=4):
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


# -- the commands -------------------------------------------------------------------------------
def add_arguments(parser):
    """The case study's own options of ``python -m minimm train``."""
    g = parser.add_argument_group("CIFAR-10 case study (--model multimodal, image, text)")
    g.add_argument("--lam", type=non_negative_float, default=0.0,
                   help="λ of the L2 penalty λR(θ)")
    g.add_argument("--multitask", action="store_true",
                   help="add a second head for vehicle/animal; loss Σℓ + λR(θ)")
    g.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                   help="use the first N training images")
    g.add_argument("--limit-test", type=positive_int, default=None, metavar="N",
                   help="use the first N test images")
    g.add_argument("--caption-seed", type=non_negative_int, default=0,
                   help="train captions use it, test captions it + 1")
    g.add_argument("--max-len", type=MAX_LEN, default=16, help="caption length in tokens "
                   "(a caption is a few words)")


def add_data_arguments(parser):
    """Where the data comes from: options of ``train`` and ``evaluate``."""
    g = parser.add_argument_group("data (CIFAR-10)")
    g.add_argument("--data", default=None, metavar="PATH",
                   help="cifar-10-binary.tar.gz or its extracted folder")
    g.add_argument("--download", action="store_true",
                   help="download the official archive into the cache (once)")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="the cache folder (default $MINIMM_CACHE_DIR or ~/.cache/minimm)")
    g.add_argument("--url", default=None, help="where --download fetches the archive from "
                   "(default $MINIMM_CIFAR10_URL or the official URL)")


NO_DATA_HELP = ("pass --data PATH (the official cifar-10-binary.tar.gz or its extracted "
                "cifar-10-batches-bin folder), or --download to fetch it once from {url} into "
                "the cache {cache} (MD5-verified; later runs find it there). Offline, copy the "
                "archive from a machine that has it into {cache}")


def load_data(args):
    """((x_train, y_train), (x_test, y_test)) from --data, else the cache (--cache-dir, which
    --download fills once from --url); a UsageError saying what to do if it cannot be had."""
    try:
        if args.data is not None:
            return cifar10.load_cifar10(path=args.data)
        return cifar10.load_cifar10(download=args.download, root=args.cache_dir, url=args.url)
    except (OSError, ValueError, EOFError) as e:
        cache = cifar10.cache_dir(args.cache_dir)
        remedy = NO_DATA_HELP.format(url=cifar10.download_url(args.url), cache=cache)
        cached = [os.path.join(cache, n) for n in (cifar10.FOLDER_NAME, cifar10.ARCHIVE_NAME)]
        if args.data is None and not args.download and not any(map(os.path.exists, cached)):
            raise UsageError(f"no CIFAR-10 data given: {remedy}") from e
        raise UsageError(f"cannot load CIFAR-10 ({e}); {remedy}") from e


def train(args, say=print):
    """The ``train`` command for this case study; returns the metrics it writes to
    DIR/metrics.json (beside history.json, model.npz, accuracy.png, loss.png, confusion.png).
    With ``--distributed`` this process is one rank (:func:`minimm.distributed.fit_distributed`):
    rank 0 alone prints, writes the files and returns the metrics; the others return None."""
    t_start = time.perf_counter()
    group = distributed.group_from_args(args)        # None without --distributed
    main = group is None or group.is_main
    say = say if main else (lambda *a, **k: None)
    epochs = args.epochs or (1 if args.quick else 10)
    limit_train = args.limit_train or (QUICK_TRAIN if args.quick else None)
    limit_test = args.limit_test or (QUICK_TEST if args.quick else None)
    vocab = captions.caption_vocabulary()
    model = MODELS[args.model][0](args, len(vocab), np.random.default_rng(args.seed))
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = Objective(args.lam)
    checkpoint = os.path.join(args.out, "model.npz")
    if args.resume and os.path.exists(checkpoint):   # a wrong checkpoint fails before the data
        check_resume(checkpoint, model, epochs)

    (x_train, y_train), (x_test, y_test) = load_data(args)
    x_train, y_train = x_train[:limit_train], y_train[:limit_train]
    x_test, y_test = x_test[:limit_test], y_test[:limit_test]
    data_config = {"kind": args.model, "caption_seed": args.caption_seed,
                   "p_true": captions.P_TRUE, "p_wrong": captions.P_WRONG,
                   "max_len": args.max_len, "train_samples": len(y_train),
                   "test_samples": len(y_test)}
    train_set = caption_dataset(x_train, y_train, args.caption_seed, vocab, args.max_len,
                                superlabels=args.multitask)
    # the test captions are drawn with their own seed: no caption is shared with training
    test_set = caption_dataset(x_test, y_test, args.caption_seed + 1, vocab, args.max_len,
                               superlabels=args.multitask)
    say(f"train: {args.model} model{' + superclass head' if args.multitask else ''}, "
        f"{len(y_train)} train / {len(y_test)} test images, {epochs} epoch(s), batch "
        f"{args.batch_size}{f' per rank × {group.world_size} ranks' if group else ''}, Adam lr "
        f"{args.lr}, lam {args.lam}, device {args.device} -> {args.out}")
    run = fit if group is None else functools.partial(distributed.fit_distributed, group)
    history = run(model, train_set, test_set, epochs, optimizer, loss_fn=loss_fn,
                  batch_size=args.batch_size, device=args.device, seed=args.seed,
                  progress=not args.no_progress, checkpoint_path=checkpoint,
                  resume=args.resume, checkpoint_extra=data_config,
                  eval_batch_size=args.eval_batch_size,
                  callbacks=[PrintEpochs(epochs)] if args.no_progress and main else ())
    if not main:
        return None
    result = history.val_result       # None when a finished run was resumed: evaluate it now
    if result is None:
        result = evaluate_model(model, test_set, loss_fn, args.eval_batch_size)
    out = metrics_json(result, model.config())
    out.update({"model": args.model, "multitask": bool(args.multitask), "epochs": len(history),
                "train_samples": len(y_train), "test_samples": len(y_test),
                "batch_size": args.batch_size, "lr": args.lr, "lam": args.lam,
                "seed": args.seed, "device": args.device,
                **epoch_seconds(history),
                "wall_seconds": time.perf_counter() - t_start})
    write_run(history, out, args.out)
    say(f"test accuracy {out['test_accuracy']:.4f}, superclass accuracy "
        f"{out['task_accuracy']['superclass']:.4f}, macro F1 {out['macro_f1']:.4f}, macro AUC "
        f"{out['macro_auc']:.4f}; {out['seconds']:.1f} s over {out['epochs']} epoch(s)")
    return out


def check_resume(checkpoint, model, epochs):
    ckpt = load_checkpoint(checkpoint)
    try:
        restore(ckpt, model, source=f"--resume: {checkpoint}")
    except UsageError as e:
        raise UsageError(f"{e}; resume with the --model and options it was trained with, or "
                         f"train into another --out") from e
    done = int(ckpt.get("epoch", 0))
    if done > epochs:
        raise UsageError(f"--resume: {checkpoint} has done {done} epochs, more than --epochs "
                         f"{epochs} (--epochs counts the total, resumed ones included)")


def evaluate(args, ckpt, say=print):
    """The ``evaluate`` command: the checkpoint's model on the test set it was tested on (same
    images, same caption seed); returns the metrics."""
    config = ckpt.get("config", {})
    missing = [k for k in ("mode", "vocab_size", "num_classes", "caption_seed", "max_len")
               if k not in config]
    if missing:
        raise UsageError(f"{args.checkpoint} lacks the model config {missing}; was it written "
                         f"by `python -m minimm train`?")
    kind = config.get("kind", config["mode"])
    vocab = captions.caption_vocabulary()
    if int(config["vocab_size"]) not in (0, len(vocab)):
        raise UsageError(f"{args.checkpoint}: the checkpoint's vocabulary has "
                         f"{config['vocab_size']} words, this minimm's captions {len(vocab)}")
    try:
        model = MODELS[kind][1](config)
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{args.checkpoint}: its config cannot build a model: {e}") from e
    restore(ckpt, model, source=args.checkpoint)
    model.to(args.device)
    _, (x_test, y_test) = load_data(args)
    limit = args.limit_test or int(config.get("test_samples", len(y_test)))
    x_test, y_test = x_test[:limit], y_test[:limit]
    test_set = caption_dataset(x_test, y_test, int(config["caption_seed"]) + 1, vocab,
                               int(config["max_len"]),
                               superlabels=getattr(model, "multitask", False),
                               p_true=config.get("p_true"), p_wrong=config.get("p_wrong"))
    result = evaluate_model(model, test_set, Objective.from_config(ckpt.get("fit", {})),
                            args.batch_size, progress=True)
    out = metrics_json(result, model.config())
    out.update({"model": kind, "multitask": getattr(model, "multitask", False),
                "epochs": int(ckpt.get("epoch", 0)), "test_samples": len(y_test),
                "checkpoint": args.checkpoint})
    return out


__all__ = ["as_dataset", "caption_dataset", "model_inputs", "Objective", "MODELS",
           "register_model", "metrics_json", "write_plots", "write_run", "epoch_seconds",
           "summary", "add_arguments", "add_data_arguments",
           "load_data", "train", "evaluate", "DATA_KEYS"]
