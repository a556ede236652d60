"""A from-scratch CIFAR-10 recipe past 90 % on two CPU cores: ``--model resnet9 --recipe fast``.

    python -m minimm train --model resnet9 --recipe fast --data cifar-10-binary.tar.gz

The article's model reaches about 0.79 in 10 epochs; this case study trains a stronger one,
still from random weights, with the tricks of the fast CIFAR-10 training records (each one
a piece here):

    model          ResNet9 (:mod:`minimm.models.resnet`): Conv-BN-ReLU blocks, two residual
                   blocks, max pooling, logits × 1/8; widths 32-64-128-256 by default
    augmentation   random crops (translations by up to 4 pixels, zero padding) and
                   horizontal flips (:mod:`minimm.data.augment`), drawn per batch from the
                   Loader's (seed, epoch, batch) generator — a resumed run repeats them
    loss           cross-entropy with label smoothing 0.2 (:class:`SmoothedObjective`)
    optimiser      SGD with Nesterov momentum 0.9, weight decay 5e-4 (L2 on every
                   parameter, added to the gradient as PyTorch's SGD does), peak rate 0.3
    epochs         13 (sized to finish within an hour on two CPU cores: about 240 s each)
    schedule       one cycle, per step (:class:`OneCycleSchedule`): the learning rate rises
                   linearly to its peak over the first quarter of the steps, then falls
                   linearly to 1/100 of the start
    evaluation     test-time augmentation for the final test accuracy on all test images:
                   the logits of six views of each image averaged — the image and its
                   mirror image, each also shifted one pixel down-right and up-left
                   (:class:`TranslateTTAObjective`; ``--no-tta-translate`` keeps the two
                   unshifted views, :class:`FlipTTAObjective`); the per-epoch curve is
                   measured without it, on the first ``val_samples`` (2,000) test images,
                   which costs 3 s an epoch instead of 17
    batches        256 images: large matrix products keep the BLAS busy
    whitening      the first 3×3 convolution replaced by fixed patch-whitening filters,
                   fitted to the first 5,000 training images, and a 1×1 convolution
                   (:class:`minimm.nn.PatchWhitening`; ``--no-whiten`` keeps the convolution)

A recipe is a dict of these settings (``RECIPES``); ``--epochs``, ``--batch-size`` and
``--lr`` replace the recipe's epochs, batch size and *peak* learning rate when they are
given with values other than the train command's defaults (None, 32 and 1e-3, which here mean
"the recipe's"). The run writes what every train run writes (model.npz, history.json,
metrics.json with ``test_accuracy`` after the test-time augmentation and
``test_accuracy_plain`` without, accuracy.png, loss.png, confusion.png) into --out.
"""
import argparse
import os
import sys
import time

import numpy as np

from .. import functional as F
from .. import optim
from ..autograd import Tensor, no_grad
from ..backend import get_array_module
from ..data.augment import flip, random_crop, random_flip, translate
from ..data.loader import Loader, normalize_images
from ..errors import UsageError
from ..models.resnet import ResNet9
from ..train import Callback, PrintEpochs, evaluate as evaluate_model, fit, restore
from . import non_negative_float, non_negative_int, positive_float, positive_ints, register
from .cifar10 import (check_resume, epoch_seconds, load_data, metrics_json,
                      summary as _summary, write_plots, write_run)

MODEL = "resnet9"
RECIPES = {
    "fast": {"widths": (32, 64, 128, 256), "epochs": 13, "batch_size": 256, "max_lr": 0.3,
             "momentum": 0.9, "weight_decay": 5e-4, "label_smoothing": 0.2, "pct_start": 0.25,
             "crop_padding": 4, "tta": True, "tta_translate": True, "val_samples": 2000,
             "whiten": True},
}
CLI_DEFAULTS = {"epochs": None, "batch_size": 32, "lr": 1e-3}   # the train command's defaults
WHITEN_IMAGES = 5000     # the training images whose patches fit --whiten's filters


# -- data ---------------------------------------------------------------------------------------
def augmentation(crop_padding):
    """The Loader transform: each batch's uint8 images randomly translated and flipped, with
    the Loader's generator (a function of seed, epoch and batch index)."""
    def transform(batch, rng):
        images = random_flip(random_crop(batch["images"], crop_padding, rng), rng=rng)
        return {**batch, "images": images}
    return transform


def _images(batch):
    images = batch["images"]
    xp = get_array_module(images)
    return Tensor(normalize_images(images) if images.dtype == np.uint8
                  else images.astype(xp.float32, copy=False))


# -- the losses ---------------------------------------------------------------------------------
def smoothed_cross_entropy(logits, labels, label_smoothing):
    """Cross-entropy against (1 − ε) onehot(t) + ε/C:  (1 − ε) CE(x, t) + ε · mean_c(−log
    softmax(x)_c) — ``F.cross_entropy(..., label_smoothing=ε)`` as in PyTorch."""
    try:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    except TypeError:     # a minimm whose cross_entropy has no label_smoothing yet
        ce = F.cross_entropy(logits, labels)
        if label_smoothing == 0:
            return ce
        uniform = -F.mean(F.log_softmax(logits, axis=1))
        return ce * (1.0 - label_smoothing) + uniform * label_smoothing


def _outputs(logits, labels):
    with no_grad():
        P = F.softmax(logits, axis=-1).data
    predictions = P.argmax(axis=1)
    return {"probabilities": P, "predictions": predictions, "labels": labels}, \
        (predictions == labels).mean()


class SmoothedObjective:
    """loss_fn for fit: label-smoothed cross-entropy of ``model(images)``; logs "accuracy";
    outputs "probabilities", "predictions", "labels"."""

    def __init__(self, label_smoothing=0.2):
        self.label_smoothing = float(label_smoothing)

    def config(self):
        return {"label_smoothing": self.label_smoothing}

    def __call__(self, model, batch):
        logits = model(_images(batch))
        loss = smoothed_cross_entropy(logits, batch["labels"], self.label_smoothing)
        outputs, accuracy = _outputs(logits, batch["labels"])
        return loss, {"accuracy": accuracy}, outputs


class FlipTTAObjective(SmoothedObjective):
    """The same loss on the mean of the logits of each image and of its mirror image (flip
    test-time augmentation); for evaluation."""

    def __call__(self, model, batch):
        logits = self.logits(model, _images(batch))
        loss = smoothed_cross_entropy(logits, batch["labels"], self.label_smoothing)
        outputs, accuracy = _outputs(logits, batch["labels"])
        return loss, {"accuracy": accuracy}, outputs

    @staticmethod
    def logits(model, x):
        """½ (f(x) + f(mirror x))."""
        return (model(x) + model(Tensor(flip(x.data)))) * 0.5


class TranslateTTAObjective(FlipTTAObjective):
    """Flip and translation test-time augmentation (six views, as the fast-training records):

        ½ m(x) + ¼ m(shift₊₁ x) + ¼ m(shift₋₁ x),   m(x) = ½ (f(x) + f(mirror x)),

    shift_{±1} moving the image one pixel down and right (up and left), the border mirrored
    (:func:`minimm.data.augment.translate`)."""

    @staticmethod
    def logits(model, x):
        m = FlipTTAObjective.logits
        return (m(model, x) * 0.5 + m(model, Tensor(translate(x.data, 1, 1))) * 0.25
                + m(model, Tensor(translate(x.data, -1, -1))) * 0.25)


def tta_objective(label_smoothing, tta, tta_translate=False):
    """The evaluation objective of a run's settings: plain, flip, or flip and translations."""
    if not tta:
        return SmoothedObjective(label_smoothing)
    return (TranslateTTAObjective if tta_translate else FlipTTAObjective)(label_smoothing)


# -- the schedule -------------------------------------------------------------------------------
class OneCycleSchedule(Callback):
    """Sets the learning rate before every optimiser step from the step number alone (so a
    resumed run continues the schedule exactly): linear warm-up from max_lr/div_factor to
    max_lr over ``pct_start`` of the steps, then linear decay to max_lr/(div_factor ·
    final_div_factor) — ``optim.OneCycleLR`` with ``anneal_strategy="linear"``."""

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.25, div_factor=10.0,
                 final_div_factor=10.0):
        self.optimizer = optimizer
        self.cycle = optim.OneCycleLR(optimizer, max_lr, total_steps, pct_start, "linear",
                                      div_factor, final_div_factor)
        self.total_steps = int(total_steps)

    def on_after_backward(self, model, step):
        t = min(step, self.total_steps - 1)
        for group, max_lr in zip(self.optimizer.param_groups, self.cycle.base_lrs):
            group["lr"] = float(self.cycle.lr_at(t, max_lr))


# -- the commands -------------------------------------------------------------------------------
def add_arguments(parser):
    g = parser.add_argument_group(f"fast CIFAR-10 recipe (--model {MODEL})")
    g.add_argument("--recipe", default="fast", choices=sorted(RECIPES),
                   help="the training recipe of --model resnet9 (augmentation, label "
                        "smoothing, Nesterov SGD, one-cycle schedule, flip TTA); --epochs, "
                        "--batch-size and --lr (the peak rate) override it when given")
    g.add_argument("--widths", type=positive_ints, default=None, metavar="W0,W1,W2,W3",
                   help="ResNet9 channels (default the recipe's, 32,64,128,256)")
    g.add_argument("--label-smoothing", type=non_negative_float, default=None,
                   help="ε of the smoothed cross-entropy (default the recipe's, 0.2)")
    g.add_argument("--weight-decay", type=non_negative_float, default=None,
                   help="SGD's L2 weight decay (default the recipe's, 5e-4); for --model clip "
                        "AdamW's decoupled decay of the weight matrices (default 0.1)")
    g.add_argument("--crop-padding", type=non_negative_int, default=None, metavar="PIXELS",
                   help="random translations of up to this many pixels (default 4)")
    g.add_argument("--no-tta", action="store_true", help="no flip test-time augmentation")
    g.add_argument("--tta-translate", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation with one-pixel translations besides the flip "
                        "(six views instead of two: TranslateTTAObjective; the recipe's "
                        "default); --no-tta-translate: the flip alone")
    g.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=None,
                   help="ResNet9's whitened prep block: fixed 3x3 patch-whitening filters "
                        f"fitted to the first {WHITEN_IMAGES} training images, then a 1x1 "
                        "convolution (the recipe's default; --no-whiten: a 3x3 convolution)")
    g.add_argument("--val-samples", type=non_negative_int, default=None, metavar="N",
                   help="test images evaluated after every epoch for the curve (default the "
                        "recipe's, 2000; 0: all); the final test accuracy uses them all")
    g.add_argument("--lr-warmup", type=positive_float, default=None, metavar="FRACTION",
                   help="the fraction of the steps spent warming up (default 0.25)")


def settings(args):
    """The recipe's settings with the command line's replacements."""
    s = dict(RECIPES[args.recipe])
    if args.epochs not in (None, CLI_DEFAULTS["epochs"]):
        s["epochs"] = args.epochs
    elif args.quick:
        s["epochs"] = 1
    if args.batch_size != CLI_DEFAULTS["batch_size"]:
        s["batch_size"] = args.batch_size
    if args.lr != CLI_DEFAULTS["lr"]:
        s["max_lr"] = args.lr
    for key in ("widths", "label_smoothing", "weight_decay", "crop_padding", "val_samples"):
        if getattr(args, key) is not None:
            s[key] = tuple(args.widths) if key == "widths" else getattr(args, key)
    if args.lr_warmup is not None:
        if not 0 < args.lr_warmup < 1:
            raise UsageError(f"--lr-warmup must be in (0, 1), got {args.lr_warmup}")
        s["pct_start"] = args.lr_warmup
    if len(s["widths"]) != 4:
        raise UsageError(f"--widths needs four channel counts (prep, layer1, layer2, layer3), "
                         f"got {list(s['widths'])}")
    s["tta"] = s["tta"] and not args.no_tta
    if args.whiten is not None:
        s["whiten"] = args.whiten
    if args.tta_translate is not None:
        s["tta_translate"] = args.tta_translate
    s["tta_translate"] = s["tta"] and s["tta_translate"]
    return s


def train(args, say=print):
    """The ``train`` command for ``--model resnet9``; returns the metrics it writes."""
    from ..nn.fast import fast_kernels
    with fast_kernels():
        return _train(args, say)


def _tta_name(s):
    return ("flip + translate TTA" if s["tta_translate"] else "flip TTA") if s["tta"] \
        else "no TTA"


def _train(args, say):
    t_start = time.perf_counter()
    s = settings(args)
    limit_train = args.limit_train or (2000 if args.quick else None)
    limit_test = args.limit_test or (500 if args.quick else None)
    model = ResNet9(10, s["widths"], rng=np.random.default_rng(args.seed), whiten=s["whiten"])
    optimizer = optim.SGD(model.parameters(), lr=s["max_lr"], momentum=s["momentum"],
                          weight_decay=s["weight_decay"], nesterov=True)
    loss_fn = SmoothedObjective(s["label_smoothing"])
    checkpoint = os.path.join(args.out, "model.npz")
    if args.resume and os.path.exists(checkpoint):
        check_resume(checkpoint, model, s["epochs"])
    (x_train, y_train), (x_test, y_test) = load_data(args)
    x_train, y_train = x_train[:limit_train], y_train[:limit_train]
    x_test, y_test = x_test[:limit_test], y_test[:limit_test]
    if s["whiten"]:   # a function of the training images alone, so a resumed run fits the same
        model.prep[0].fit(normalize_images(x_train[:WHITEN_IMAGES]))
    train_set = Loader({"images": x_train, "labels": y_train.astype(np.int64)},
                       s["batch_size"], shuffle=True, seed=args.seed,
                       transform=augmentation(s["crop_padding"]))
    test_set = {"images": x_test, "labels": y_test.astype(np.int64)}
    n_val = s["val_samples"] or len(y_test)
    val_set = ({k: v[:n_val] for k, v in test_set.items()} if n_val < len(y_test)
               else test_set)
    total_steps = s["epochs"] * len(train_set)
    schedule = OneCycleSchedule(optimizer, s["max_lr"], total_steps, s["pct_start"])
    config = {"kind": MODEL, "recipe": args.recipe, "train_samples": len(y_train),
              "test_samples": len(y_test), "val_samples": min(n_val, len(y_test)),
              "tta": bool(s["tta"]), "tta_translate": bool(s["tta_translate"])}
    say(f"train: {MODEL} {list(s['widths'])}, recipe {args.recipe}: {len(y_train)} train / "
        f"{len(y_test)} test images, {s['epochs']} epoch(s), batch {s['batch_size']}, Nesterov "
        f"SGD peak lr {s['max_lr']}, weight decay {s['weight_decay']}, label smoothing "
        f"{s['label_smoothing']}, crops ±{s['crop_padding']} px + flips, "
        f"{_tta_name(s)}, device {args.device} -> {args.out}")
    callbacks = [schedule] + ([PrintEpochs(s["epochs"])] if args.no_progress else [])
    history = fit(model, train_set, val_set, s["epochs"], optimizer, loss_fn=loss_fn,
                  device=args.device, seed=args.seed, progress=not args.no_progress,
                  checkpoint_path=checkpoint, resume=args.resume, checkpoint_extra=config,
                  eval_batch_size=args.eval_batch_size, callbacks=callbacks)
    t_eval = time.perf_counter()
    plain = ((val_set is test_set and history.val_result)
             or evaluate_model(model, test_set, loss_fn, args.eval_batch_size))
    result = (evaluate_model(model, test_set, tta_objective(s["label_smoothing"], True,
                                                            s["tta_translate"]),
                             args.eval_batch_size) if s["tta"] else plain)
    out = metrics_json(result, model.config())
    out.update({"model": MODEL, "recipe": args.recipe, "multitask": False,
                "tta": bool(s["tta"]), "tta_translate": bool(s["tta_translate"]),
                "test_accuracy_plain": float(plain["accuracy"]),
                "epochs": len(history), "train_samples": len(y_train),
                "test_samples": len(y_test), "batch_size": s["batch_size"],
                "max_lr": s["max_lr"], "seed": args.seed, "device": args.device,
                "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()},
                **epoch_seconds(history),
                "final_evaluation_seconds": time.perf_counter() - t_eval,
                "wall_seconds": time.perf_counter() - t_start})
    curve = "test" if val_set is test_set else f"test (first {n_val:,})"
    write_run(history, out, args.out,
              plots=lambda h, m, folder: write_plots(h, m, folder, val_label=curve))
    say(f"test accuracy {out['test_accuracy']:.4f} ({_tta_name(s) if s['tta'] else 'plain'}; "
        f"plain {out['test_accuracy_plain']:.4f}); {out['wall_seconds']:.1f} s in all, "
        f"{out['seconds']:.1f} s over {out['epochs']} epoch(s)")
    return out


def evaluate(args, ckpt, say=print):
    """The ``evaluate`` command for a resnet9 checkpoint: test accuracy with the run's
    test-time augmentation (flip, or flip and translations; none if the run had none)."""
    from ..nn.fast import fast_kernels
    with fast_kernels():
        return _evaluate(args, ckpt)


def _evaluate(args, ckpt):
    config = ckpt.get("config", {})
    try:
        model = ResNet9.from_config(config)
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{args.checkpoint}: its config cannot build a model: {e}") from e
    restore(ckpt, model, source=args.checkpoint)
    model.to(args.device)
    _, (x_test, y_test) = load_data(args)
    limit = args.limit_test or int(config.get("test_samples", len(y_test)))
    test_set = {"images": x_test[:limit], "labels": y_test[:limit].astype(np.int64)}
    eps = float(ckpt.get("fit", {}).get("label_smoothing", 0.0))
    objective = tta_objective(eps, config.get("tta", True), config.get("tta_translate", False))
    result = evaluate_model(model, test_set, objective, args.batch_size, progress=True)
    out = metrics_json(result, model.config())
    out.update({"model": MODEL, "multitask": False, "tta": bool(config.get("tta", True)),
                "tta_translate": bool(config.get("tta_translate", False)),
                "epochs": int(ckpt.get("epoch", 0)), "test_samples": limit,
                "checkpoint": args.checkpoint})
    return out


def summary(metrics):
    return _summary(metrics)


register(MODEL, sys.modules[__name__])

__all__ = ["RECIPES", "augmentation", "smoothed_cross_entropy", "SmoothedObjective",
           "FlipTTAObjective", "TranslateTTAObjective", "tta_objective", "OneCycleSchedule",
           "add_arguments", "settings", "train", "evaluate", "summary"]
