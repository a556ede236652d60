"""The command line: ``python -m minimm <command>`` (or ``minimm <command>`` once installed).

    python -m minimm demo                      # train a tiny classifier in seconds, no download
    python -m minimm train --data cifar-10-binary.tar.gz --model multimodal --out runs/mm
    python -m minimm evaluate --checkpoint runs/mm/model.npz --data cifar-10-binary.tar.gz
    python -m minimm caption --checkpoint runs/captioner/model.npz --data ... --count 8

Parsers and thin handlers: the work is done by library functions (``minimm.experiments``); the
benchmarks are scripts outside the package (``python benchmarks/bench.py``). Every number is checked by its argparse type before anything is loaded. A
user's mistake, found by argparse or raised anywhere as :class:`minimm.UsageError`, is printed
by :func:`main` as one line ``error: ...`` on stderr, without a traceback, exit code 2. A model
kind for ``train --model`` is registered in an experiments module (see minimm.experiments).
"""
import argparse
import json
import os
import sys

import numpy as np

from . import distributed, experiments
from .errors import UsageError
from .experiments import non_negative_int, positive_float, positive_int


class _Parser(argparse.ArgumentParser):
    def error(self, message):       # argparse's own errors: one line too, exit code 2
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _device(name):
    """The device, checked before any data is loaded (CuPy installed, a GPU present)."""
    from .backend import check_device
    try:
        return check_device(name)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"--device {name}: {e}") from e


def _folder(path, flag):
    """Create folder ``path`` (and its parents) for the run's files."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a file, not a folder; pass a folder for the output")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot create the folder ({e})") from e


# -- the commands -------------------------------------------------------------------------------
def demo(args):
    from .experiments.spiral import run_demo
    run_demo(args.steps, args.hidden, args.lr, args.seed, _device(args.device))


def train(args):
    from .train import NonFiniteLossError
    args.device = _device(args.device)
    args.out = args.out or os.path.join("runs", args.model)
    _folder(args.out, "--out")
    try:                # fit reports a nan or inf itself: no NumPy warnings before its line
        with np.errstate(all="ignore"):
            experiments.EXPERIMENTS[args.model].train(args)
    except NonFiniteLossError as e:
        raise UsageError(f"{e} (this run: --lr {args.lr:g})") from e


def evaluate(args):
    from ._io import json_safe, write_json
    from .train import load_checkpoint
    args.device = _device(args.device)
    if args.metrics is not None:
        if os.path.isdir(args.metrics):
            raise UsageError(f"--metrics {args.metrics} is a folder; pass a file name")
        _folder(os.path.dirname(os.path.abspath(args.metrics)), "--metrics")
    ckpt = load_checkpoint(args.checkpoint)
    experiment = experiments.for_checkpoint(ckpt, args.checkpoint)
    out = experiment.evaluate(args, ckpt)
    if args.metrics is not None:
        write_json(out, args.metrics)
    print(json.dumps(json_safe(out), indent=2) if args.json else experiment.summary(out))


def caption(args):
    from .train import load_checkpoint
    args.device = _device(args.device)
    experiments.captioning.caption(args, load_checkpoint(args.checkpoint))


def build_parser():
    parser = _Parser(prog="minimm", description="minimm: a from-scratch multimodal "
                     "deep-learning library (NumPy / CuPy)")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)

    p = sub.add_parser("demo", help="train a tiny classifier on synthetic spirals (seconds, "
                                    "no download)")
    p.add_argument("--steps", type=positive_int, default=300)
    p.add_argument("--hidden", type=positive_int, default=64)
    p.add_argument("--lr", type=positive_float, default=0.01)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.set_defaults(func=demo)

    p = sub.add_parser("train", help="train a model of a case study (default: the article's "
                                     "§4.3/§5.2 model on CIFAR-10 with synthetic captions)")
    p.add_argument("--model", default="multimodal", choices=sorted(experiments.EXPERIMENTS))
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs in total, resumed ones included (default 10, 1 with --quick)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--eval-batch-size", type=positive_int, default=256)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="initial weights and shuffling")
    p.add_argument("--out", default=None, metavar="DIR", help="where the run's files go "
                   "(default runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/model.npz")
    p.add_argument("--quick", action="store_true", help="smoke test: 2000 train / 500 test "
                   "images, 1 epoch")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one line per epoch")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    experiments.cifar10.add_data_arguments(p)
    for experiment in experiments.modules():
        experiment.add_arguments(p)
    distributed.add_arguments(p)
    p.set_defaults(func=train)

    p = sub.add_parser("evaluate", help="test metrics of a checkpoint written by train")
    p.add_argument("--checkpoint", required=True, metavar="DIR/model.npz")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--limit-test", type=positive_int, default=None, metavar="N",
                   help="default: the number the checkpoint was tested on")
    p.add_argument("--json", action="store_true",
                   help="print all the metrics as JSON instead of the summary")
    p.add_argument("--metrics", default=None, metavar="FILE",
                   help="also write all the metrics to FILE as JSON")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    experiments.cifar10.add_data_arguments(p)
    p.set_defaults(func=evaluate)

    experiments.captioning.add_caption_parser(sub).set_defaults(func=caption)
    return parser


def main(argv=None):
    """Run one command; return its exit code (0, or 2 after a user's mistake)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:                   # --help, or argparse's one-line error
        return e.code
    try:
        args.func(args)
    except UsageError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory: use smaller sizes (--batch-size, --limit-train, lengths, "
              "hidden sizes)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
