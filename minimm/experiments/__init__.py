"""Case studies on top of the library, one module each (layer 7: they import anything below).

    cifar10   the article's §4.3 / §5.2 case study: captioned CIFAR-10, ``--model multimodal |
              image | text`` (CNN + LSTM, fused by concatenation), its loss, metrics and plots
    spiral    the ``demo`` command: a tiny classifier on 2-D spirals, trained by ``fit``
    cifar10_fast  ``--model resnet9 --recipe fast``: a from-scratch ResNet past 90 % on CIFAR-10
              (augmentation, label smoothing, Nesterov SGD, one-cycle schedule, flip TTA)

``python -m minimm train --model NAME`` runs ``EXPERIMENTS[NAME].train(args)``. An experiment
is a module with four functions, and it registers the model names it trains with
:func:`register`:

    add_arguments(parser)           its own options of ``train`` (the common ones are the CLI's)
    train(args, say=print)          train, write the run's files into args.out; -> metrics
    evaluate(args, checkpoint)      the metrics of a checkpoint it wrote (``evaluate`` command)
    summary(metrics)                a few readable lines of them

A new model in an existing case study is one call in that module (for CIFAR-10:
``cifar10.register_model(name, build, rebuild)``); a new case study is a new module, imported
at the bottom of this file. The argparse value types below are shared by every parser, so
each number is checked before anything is loaded.
"""
import argparse
import math

EXPERIMENTS = {}   # --model name -> the experiment module that trains it


def register(name, experiment):
    """Make ``python -m minimm train --model name`` run ``experiment.train``."""
    EXPERIMENTS[name] = experiment


def modules():
    """The experiment modules, each once, in registration order."""
    return list(dict.fromkeys(EXPERIMENTS.values()))


def for_checkpoint(ckpt, path):
    """The experiment that wrote ``ckpt`` (its config names the model kind)."""
    from ..errors import UsageError
    config = ckpt.get("config", {})
    kind = config.get("kind", config.get("mode"))      # older checkpoints name only the mode
    if kind not in EXPERIMENTS:
        raise UsageError(f"{path}: the checkpoint names no model this minimm trains (kind "
                         f"{kind!r}; known: {sorted(EXPERIMENTS)}); was it written by "
                         f"`python -m minimm train`?")
    return EXPERIMENTS[kind]


# -- argparse value types: the message becomes "error: argument --lr: must be ..." ------------
def _number(cast, ok, want):
    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value
    parse.__name__ = want
    return parse


def int_in(low, high):
    """An integer in low..high (a length beyond ``high`` only wastes memory and time)."""
    return _number(int, lambda v: low <= v <= high, f"an integer in {low}..{high}")


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
non_negative_float = _number(float, lambda v: math.isfinite(v) and v >= 0,
                             "a finite number >= 0")


def positive_ints(text):
    """"32,128" -> [32, 128]: a comma-separated list of positive integers."""
    try:
        values = [positive_int(v) for v in text.split(",") if v.strip()]
    except argparse.ArgumentTypeError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got "
                                         f"{text!r}")
    return values


def names(text):
    """"image,text" -> ["image", "text"]."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"must be comma-separated names, got {text!r}")
    return values


from . import cifar10  # noqa: E402  (registers multimodal, image, text)
from . import cifar10_fast  # noqa: E402  (registers resnet9: the fast recipe)
from . import transformer, clip  # noqa: E402  (register transformer, clip)
from . import captioning  # noqa: E402  (registers captioner)

__all__ = ["EXPERIMENTS", "register", "modules", "for_checkpoint", "int_in", "positive_int",
           "non_negative_int", "positive_float", "non_negative_float", "positive_ints",
           "names", "cifar10", "cifar10_fast", "transformer", "clip", "captioning"]
