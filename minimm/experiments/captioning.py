"""Image to text on CIFAR-10: the captioning decoder (:class:`minimm.models.Captioner`) trained
by :func:`minimm.train.fit` on captions that state the class and what the pixels show.

    python -m minimm train --model captioner --data cifar-10-binary.tar.gz --out runs/captioner
    python -m minimm caption --checkpoint runs/captioner/model.npz --data ... --count 8
    python -m minimm caption --checkpoint runs/captioner/model.npz --image my_photo.jpg

The captions (:func:`caption_data`): every one names the true class (p_true = 1: a writer is
taught to tell the truth) and states the image's colour, brightness and position
(:func:`minimm.data.captions.pixel_attributes`), e.g. "a blurry photo of a dark blue jet on
the left". The loss is :func:`minimm.models.caption_loss`. metrics.json holds the per-token
test perplexity, the fraction of greedy captions naming the true class, and the accuracy of
each attribute word beside the rate of always writing its most frequent value.
"""
import os
import sys
import time

import numpy as np

from .. import optim
from ..data import captions as C
from ..data.cifar10 import CLASSES
from ..errors import UsageError
from ..models import Captioner, caption_loss
from ..train import Callback, PrintEpochs, evaluate as evaluate_model, fit, restore
from . import non_negative_float, non_negative_int, positive_float, positive_int, register
from . import cifar10, transformer

ATTRIBUTES = C.ATTRIBUTES


def caption_data(images, labels, caption_seed=0, vocab=None, max_len=16):
    """{"images", "ids", "lengths", "labels"}: one caption per image naming its class (p_true
    = 1) with all three pixel attributes, seeded, encoded with ``vocab`` (default
    ``caption_vocabulary(attributes=True)``) and padded after the words to ``max_len``."""
    vocab = vocab if vocab is not None else C.caption_vocabulary(attributes=True)
    labels = np.asarray(labels).astype(np.int64)
    text = C.make_captions(labels, seed=caption_seed, p_true=1.0, p_wrong=0.0, images=images,
                           attributes=ATTRIBUTES)
    ids, lengths = C.encode(text, vocab, max_len=max_len)
    return {"images": images, "ids": ids, "lengths": lengths, "labels": labels}


def perplexity(result):
    """exp(Σ nll / Σ tokens) from an :func:`minimm.train.evaluate` result of caption_loss:
    the per-token perplexity over every reference token of the set."""
    return float(np.exp(np.sum(result["nll"]) / np.sum(result["tokens"])))


def generation_metrics(model, images, labels, vocab, batch_size=256, max_len=16):
    """What the greedy captions of uint8 ``images`` say, against the truth:

    * ``names_true_class``: the fraction naming the true class (one of its synonyms, and no
      other class's);
    * ``attribute_accuracy``: per attribute, the fraction whose word (or its absence) is the
      one :func:`minimm.data.captions.pixel_attributes` computes from the pixels, beside
      ``attribute_majority_rate`` and ``_word``: what always writing the most frequent value
      gets (a writer blind to the image);
    * ``captions``: the generated captions, in order.
    """
    images, labels = np.asarray(images), np.asarray(labels).astype(np.int64)
    written = []
    for start in range(0, len(labels), batch_size):
        ids = model.generate(images[start:start + batch_size], max_len=max_len)
        written += model.decode(ids, vocab)
    read, truth = C.read_captions(written), C.pixel_attributes(images)
    majority = C.majority_rates(truth)
    return {"names_true_class": float(np.mean(read["class"] == labels)),
            "attribute_accuracy": {a: float(np.mean(read[a] == truth[a])) for a in ATTRIBUTES},
            "attribute_majority_rate": {a: majority[a][1] for a in ATTRIBUTES},
            "attribute_majority_word": {a: majority[a][0] for a in ATTRIBUTES},
            "captions": written}


# -- the commands -------------------------------------------------------------------------------
def add_arguments(parser):
    """The captioner's own options of ``python -m minimm train`` (it also reads --limit-train,
    --limit-test, --caption-seed and --max-len of the CIFAR-10 group, and --d-model, --depth (the
    decoder blocks) and --heads of the Transformer group, with defaults 64, 2 and 4)."""
    g = parser.add_argument_group("captioner (--model captioner)")
    g.add_argument("--dropout", type=non_negative_float, default=0.0)
    g.add_argument("--image-prefix", choices=("global", "cells"), default="global",
                   help="the image tokens: from the whole CNN map (global, ClipCap's way) or "
                        "one per cell of it (cells, LLaVA's way)")
    g.add_argument("--image-tokens", type=positive_int, default=4,
                   help="how many (global: 1..64; cells: 4 for the 2x2 map, 16 for 4x4)")
    g.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS",
                   help="stop after the epoch past which one more would exceed this much "
                        "training time (--epochs stays the upper limit)")


def build(args, vocab_size, rng):
    """The Captioner for ``train``'s arguments (its caption positions cover --max-len words and
    <eos>); a UsageError for a combination that cannot be built."""
    transformer.check_sizes(args, d_model=64, depth=2, heads=4)
    if args.dropout >= 1:
        raise UsageError(f"--dropout must be below 1, got {args.dropout}")
    if not (1 <= args.image_tokens <= 64) or (args.image_prefix == "cells"
                                               and args.image_tokens not in (4, 16)):
        raise UsageError(f"--image-tokens {args.image_tokens}: with --image-prefix "
                         f"{args.image_prefix} it must be "
                         + ("4 or 16" if args.image_prefix == "cells" else "in 1..64"))
    if args.multitask or args.lam:
        raise UsageError("--multitask and --lam belong to the classifiers; the captioner has "
                         "no class head")
    return Captioner(vocab_size, d_model=args.d_model, num_heads=args.heads,
                     num_layers=args.depth, max_len=args.max_len + 1, dropout=args.dropout,
                     image_tokens=args.image_tokens, image_prefix=args.image_prefix, rng=rng)


def train(args, say=print):
    """The ``train`` command for ``--model captioner``; returns the metrics it writes to
    DIR/metrics.json (beside history.json, model.npz and loss.png)."""
    t_start = time.perf_counter()
    epochs = args.epochs or (1 if args.quick else 10)
    limit_train = args.limit_train or (cifar10.QUICK_TRAIN if args.quick else None)
    limit_test = args.limit_test or (cifar10.QUICK_TEST if args.quick else None)
    vocab = C.caption_vocabulary(attributes=True)
    model = build(args, len(vocab), np.random.default_rng(args.seed))
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    checkpoint = os.path.join(args.out, "model.npz")
    (x_train, y_train), (x_test, y_test) = cifar10.load_data(args)
    x_train, y_train = x_train[:limit_train], y_train[:limit_train]
    x_test, y_test = x_test[:limit_test], y_test[:limit_test]
    train_set = caption_data(x_train, y_train, args.caption_seed, vocab, args.max_len)
    test_set = caption_data(x_test, y_test, args.caption_seed + 1, vocab, args.max_len)
    data_config = {"kind": "captioner", "caption_seed": args.caption_seed,
                   "caption_max_len": args.max_len, "train_samples": len(y_train),
                   "test_samples": len(y_test)}
    budget = f" (at most {args.time_budget:g} s of training)" if args.time_budget else ""
    say(f"train: captioner (d_model {args.d_model}, {args.depth} layers, {args.heads} heads, "
        f"{args.image_tokens} {args.image_prefix} image tokens), {len(y_train)} train / "
        f"{len(y_test)} test images, {epochs} epoch(s){budget}, batch {args.batch_size}, Adam "
        f"lr {args.lr}, device {args.device} -> {args.out}")
    callbacks = [TimeBudget(args.time_budget)] if args.time_budget else []
    if args.no_progress:
        callbacks.append(PrintEpochs(epochs, ("loss", "token_accuracy", "val_loss",
                                              "val_token_accuracy", "epoch_time")))
    history = fit(model, train_set, test_set, epochs, optimizer, loss_fn=caption_loss,
                  batch_size=args.batch_size, device=args.device, seed=args.seed,
                  progress=not args.no_progress, checkpoint_path=checkpoint,
                  resume=args.resume, checkpoint_extra=data_config,
                  eval_batch_size=args.eval_batch_size, callbacks=callbacks)
    result = history.val_result
    if result is None:                       # a finished run resumed: evaluate it now
        result = evaluate_model(model, test_set, caption_loss, args.eval_batch_size)
    t_gen = time.perf_counter()
    out = _metrics(model, result, test_set, vocab, args.eval_batch_size)
    times = history.history.get("train_time", [])
    out.update({"model": "captioner", "epochs": len(history), "train_samples": len(y_train),
                "test_samples": len(y_test), "batch_size": args.batch_size, "lr": args.lr,
                "seed": args.seed, "device": args.device, "config": model.config(),
                "train_seconds": float(sum(times)), "time_budget": args.time_budget,
                **cifar10.epoch_seconds(history),
                "generation_seconds": time.perf_counter() - t_gen,
                "wall_seconds": time.perf_counter() - t_start})
    cifar10.write_run(history, out, args.out, plots=_plot)
    say(summary(out))
    return out


class TimeBudget(Callback):
    """Stop :func:`fit` after the epoch past which one more epoch, as long as this run's mean
    epoch, would take the training time (History's "train_time", validation excluded) past
    ``seconds``: the total stays within the budget (unless one epoch alone exceeds it)."""

    def __init__(self, seconds):
        self.seconds, self.spent, self.epochs = float(seconds), 0.0, 0

    def on_epoch_end(self, epoch, logs, model):
        self.spent += float(logs["train_time"])
        self.epochs += 1
        return self.spent + self.spent / self.epochs > self.seconds


def _metrics(model, result, data, vocab, batch_size):
    gen = generation_metrics(model, data["images"], data["labels"], vocab, batch_size,
                             min(16, model.max_len))
    references = [" ".join(vocab.decode(ids)) for ids in data["ids"]]
    floor = C.perplexity_floor(references, data["labels"], C.pixel_attributes(data["images"]))
    examples = [{"generated": g, "reference": r}
                for g, r in zip(gen.pop("captions")[:8], references)]
    return {"test_perplexity": perplexity(result), "test_loss": float(result["loss"]),
            "test_token_accuracy": float(result["token_accuracy"]), **gen,
            "perplexity_floor": floor, "examples": examples}


def _plot(history, metrics, folder):
    """loss.png of a captioner run (``metrics`` unused: the signature of ``write_run``'s plots)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("warning: matplotlib is not installed, loss.png was not written "
              "(pip install 'minimm[notebooks]')")
        return
    from .. import plot
    if len(history):
        plot.plot_loss(history, os.path.join(folder, "loss.png"), val_label="test",
                       title="captioner: loss per caption token (train vs test)")


def rebuild(ckpt, source):
    """The Captioner a checkpoint of ``train --model captioner`` holds, weights loaded."""
    config = ckpt.get("config", {})
    if config.get("kind") != "captioner":
        raise UsageError(f"{source} is not a captioner checkpoint (kind "
                         f"{config.get('kind', config.get('mode'))!r}); train one with "
                         f"`python -m minimm train --model captioner`")
    try:
        model = Captioner.from_config(config)
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{source}: its config cannot build a captioner: {e}") from e
    restore(ckpt, model, source=source)
    return model


def _test_set(args, ckpt, model):
    config = ckpt["config"]
    _, (x_test, y_test) = cifar10.load_data(args)
    limit = getattr(args, "limit_test", None) or int(config.get("test_samples", len(y_test)))
    return caption_data(x_test[:limit], y_test[:limit], int(config["caption_seed"]) + 1,
                        max_len=int(config["caption_max_len"]))


def evaluate(args, ckpt, say=print):
    """The ``evaluate`` command for a captioner checkpoint: its metrics on the test set it
    was tested on (same images, same caption seed)."""
    model = rebuild(ckpt, args.checkpoint).to(args.device)
    data = _test_set(args, ckpt, model)
    result = evaluate_model(model, data, caption_loss, args.batch_size, progress=True)
    out = _metrics(model, result, data, C.caption_vocabulary(attributes=True), args.batch_size)
    out.update({"model": "captioner", "epochs": int(ckpt.get("epoch", 0)),
                "test_samples": len(data["labels"]), "checkpoint": args.checkpoint})
    return out


def summary(metrics):
    """A few readable lines of the metrics."""
    acc, rate = metrics["attribute_accuracy"], metrics["attribute_majority_rate"]
    lines = [f"captioner, {metrics['epochs']} epoch(s), {metrics['test_samples']} test images "
             f"({metrics.get('checkpoint', 'this run')})",
             f"per-token test perplexity {metrics['test_perplexity']:.3f} (floor: "
             f"{metrics['perplexity_floor']['with_image']:.3f} with the image, "
             f"{metrics['perplexity_floor']['text_only']:.3f} from text alone)",
             f"greedy captions naming the true class: {metrics['names_true_class']:.4f}",
             f"{'attribute':<12}{'accuracy':>10}{'majority':>10}"]
    lines += [f"{a:<12}{acc[a]:>10.4f}{rate[a]:>10.4f}" for a in ATTRIBUTES]
    lines += [f"  {e['generated']!r:50} reference {e['reference']!r}"
              for e in metrics.get("examples", [])[:4]]
    return "\n".join(lines)


# -- the caption command ------------------------------------------------------------------------
def add_caption_parser(sub):
    """``python -m minimm caption``: write captions with a trained captioner."""
    p = sub.add_parser("caption", help="write captions for test images (or your own picture) "
                                       "with a checkpoint of `train --model captioner`")
    p.add_argument("--checkpoint", required=True, metavar="DIR/model.npz")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=non_negative_int, default=None, metavar="I",
                       help="caption test image I")
    which.add_argument("--count", type=positive_int, default=None, metavar="K",
                       help="caption the first K test images (default 8)")
    which.add_argument("--image", default=None, metavar="FILE",
                       help="caption your own PNG/JPEG, resized to 32x32 (needs Pillow)")
    p.add_argument("--temperature", type=non_negative_float, default=0.0,
                   help="0: greedy; above 0: sampled")
    p.add_argument("--top-k", type=positive_int, default=None)
    p.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed")
    p.add_argument("--max-tokens", type=cifar10.MAX_LEN, default=16,
                   help="the longest caption written, <eos> included")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    cifar10.add_data_arguments(p)
    return p


def load_image(path):
    """A PNG/JPEG file as uint8 (1, 3, 32, 32): RGB, resized with bilinear filtering."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise UsageError("--image needs Pillow, which is not installed: "
                         "pip install 'minimm[images]'") from None
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((32, 32), Image.BILINEAR)
    except FileNotFoundError:
        raise UsageError(f"--image {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"--image {path}: not an image Pillow can read ({e})") from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)[None].copy()


def caption(args, ckpt, say=print):
    """The ``caption`` command: generated captions next to the references (test images), or
    for one picture; returns the captions written."""
    model = rebuild(ckpt, args.checkpoint).to(args.device)
    if args.max_tokens > model.max_len:
        raise UsageError(f"--max-tokens {args.max_tokens}: this captioner writes at most "
                         f"{model.max_len} tokens")
    vocab = C.caption_vocabulary(attributes=True)
    kw = dict(max_len=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
              seed=args.seed)
    mode = "greedy" if args.temperature == 0 else f"temperature {args.temperature:g}" + (
        f", top-{args.top_k}" if args.top_k else "") + f", seed {args.seed}"
    if args.image is not None:
        image = load_image(args.image)
        written = model.decode(model.generate(image, **kw), vocab)
        facts = C.pixel_attributes(image)
        said = ", ".join(f"{a} {C.ATTRIBUTE_WORDS[a][facts[a][0]] or '(none)'}"
                         for a in ATTRIBUTES)
        say(f"{args.image} ({mode}): {written[0]}")
        say(f"  its pixels (32x32): {said}")
        return written
    data = _test_set(args, ckpt, model)
    n = len(data["labels"])
    rows = ([args.index] if args.index is not None
            else list(range(min(args.count or 8, n))))
    if rows and rows[-1] >= n:
        raise UsageError(f"--index {rows[-1]}: the test set has {n} images (0..{n - 1})")
    written = model.decode(model.generate(data["images"][rows], **kw), vocab)
    say(f"{args.checkpoint}: test images {rows[0]}..{rows[-1]} ({mode})")
    say(f"{'#':>5}  {'class':<11}{'generated':<48}reference")
    for i, text in zip(rows, written):
        reference = " ".join(vocab.decode(data["ids"][i]))
        name = CLASSES[int(data["labels"][i])]
        say(f"{i:>5}  {name:<11}{text:<48}{reference}")
    return written


register("captioner", sys.modules[__name__])

__all__ = ["caption_data", "perplexity", "generation_metrics", "add_arguments", "build",
           "TimeBudget",
           "train", "evaluate", "summary", "rebuild", "add_caption_parser", "load_image",
           "caption"]
