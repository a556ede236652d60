"""``--model transformer``: the multimodal Transformer in the CIFAR-10 case study.

    python -m minimm train --model transformer [--mode multimodal|image|text]
                           [--d-model 128 --depth 4 --heads 4 --patch-size 4]

:class:`minimm.models.MultiModalTransformer` — [CLS] + 64 image patches + caption words in one
pre-norm encoder — trained on the same captioned CIFAR-10, by the same loss
(:class:`~minimm.experiments.cifar10.Objective`) and the same ``fit``, writing the same files
(history.json, metrics.json, model.npz, accuracy.png, loss.png, confusion.png) as the CNN +
LSTM model of ``--model multimodal | image | text``; its metrics.json also says the mode,
the encoder's sizes and the number of parameters.
"""
import os
import sys

from .._io import write_json
from ..data import captions
from ..errors import UsageError
from ..models import MultiModalTransformer
from ..models.transformer import MODES
from . import cifar10, positive_int, register

evaluate, summary = cifar10.evaluate, cifar10.summary


def add_arguments(parser):
    g = parser.add_argument_group("Transformer (--model transformer; the sizes also shape the "
                                  "ViT and Transformer towers of --model clip)")
    g.add_argument("--mode", choices=MODES, default="multimodal",
                   help="--model transformer: patches and words, patches only or words only")
    # shared with --model clip and --model captioner, which pick their own defaults
    g.add_argument("--d-model", type=positive_int, default=None,
                   help="token width (default 128; the captioner 64)")
    g.add_argument("--depth", type=positive_int, default=None,
                   help="encoder layers, or the captioner's decoder blocks (default 4; the "
                        "captioner 2)")
    g.add_argument("--heads", type=positive_int, default=None, help="attention heads (4)")
    g.add_argument("--patch-size", type=positive_int, default=4,
                   help="p: (32/p)² patches, 4 -> 64 tokens")


def check_sizes(args, d_model=128, depth=4, heads=4):
    """The encoder's options, checked before any data is loaded; an option not given takes the
    model's default here (the arguments)."""
    for name, default in (("d_model", d_model), ("depth", depth), ("heads", heads)):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.d_model % args.heads:
        raise UsageError(f"--d-model {args.d_model} must be divisible by --heads {args.heads}")
    if 32 % args.patch_size:
        raise UsageError(f"--patch-size {args.patch_size} must divide the image size 32")


def build(args, vocab_size, rng):
    if args.multitask:
        raise UsageError("--multitask adds a superclass head to the CNN + LSTM model; "
                         "--model transformer has one head")
    check_sizes(args)
    return MultiModalTransformer(vocab_size, 10, args.mode, d_model=args.d_model,
                                 depth=args.depth, num_heads=args.heads,
                                 patch_size=args.patch_size, max_len=args.max_len, rng=rng)


def parameter_count(model):
    """The number of trained numbers (parameters; buffers such as running means are not)."""
    return int(sum(p.size for p in model.parameters()))


def train(args, say=print):
    """:func:`minimm.experiments.cifar10.train` with this model; metrics.json gains "mode",
    the sizes and "parameters"."""
    check_sizes(args)
    out = cifar10.train(args, say)
    out.update({"mode": args.mode, "d_model": args.d_model, "depth": args.depth,
                "heads": args.heads, "patch_size": args.patch_size,
                "parameters": parameter_count(build(args, len(captions.caption_vocabulary()),
                                                    None))})
    write_json(out, os.path.join(args.out, "metrics.json"))
    return out


cifar10.MODELS["transformer"] = (build, MultiModalTransformer.from_config)
register("transformer", sys.modules[__name__])
