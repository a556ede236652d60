"""``--model clip``: contrastive pretraining on captioned CIFAR-10, then zero-shot and
linear-probe test accuracy.

    python -m minimm train --model clip [--image-encoder cnn|vit] [--text-encoder transformer|lstm]
                           [--embed-dim 128] [--weight-decay 0.1] [--templates 18]

Pretraining sees only the (image, caption) pairs — the case study's seeded, noisy captions,
half of which name the true class — and never a label: the batches hold "images", "ids"
and "lengths", and the loss is the symmetric InfoNCE (:class:`ContrastiveObjective`).
Afterwards the labels are used for evaluation only:

* **zero-shot**: each class is written into the templates of
  :data:`minimm.data.prompts.ZERO_SHOT_TEMPLATES` — sentences that never occur among the
  training captions (checked by :func:`minimm.data.prompts.check_held_out`) — their text
  embeddings averaged per class, and every test image is given the class of the nearest
  average (:func:`zero_shot`); also the accuracy with the first 1, 2, … M templates;
* **linear probe**: a softmax regression fitted on the frozen image-tower features of the
  training images (:func:`linear_probe`), tested on the test images.

The run writes history.json (loss, logit_scale, val_loss per epoch), metrics.json
("zero_shot_accuracy", the templates, "linear_probe_accuracy", …), model.npz, loss.png,
confusion.png (zero-shot) and templates.png (zero-shot accuracy against the number of
templates).
"""
import os
import sys
import time

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..autograd import Tensor, no_grad
from ..backend import to_device, to_numpy
from ..data import captions, cifar10 as cifar10_data, prompts
from ..data.loader import normalize_images
from ..errors import UsageError
from ..models import CLIP
from ..models.clip import IMAGE_ENCODERS, TEXT_ENCODERS, decay_groups
from ..train import PrintEpochs, fit, load_checkpoint, restore
from . import cifar10, non_negative_int, positive_int, register
from . import transformer

PAIR_KEYS = ("images", "ids", "lengths")      # what pretraining sees: no labels


class ContrastiveObjective:
    """The loss function for :func:`minimm.train.fit`: L = clip_loss(I, T, s) on a batch of
    (image, caption) pairs, I = model.encode_image, T = model.encode_text, s the model's
    clipped logit scale. logs: "logit_scale". It reads no labels."""

    def __call__(self, model, batch):
        images, ids, lengths = cifar10.model_inputs(batch)
        I, T = model(images, ids, lengths)
        s = model.logit_scale
        return F.clip_loss(I, T, s), {"logit_scale": s}


def pairs(images, labels, caption_seed, vocab, max_len):
    """{"images", "ids", "lengths"}: one seeded, noisy caption per image (as the case study's
    :func:`~minimm.experiments.cifar10.caption_dataset`), the labels dropped."""
    data = cifar10.caption_dataset(images, labels, caption_seed, vocab, max_len)
    return {k: data[k] for k in PAIR_KEYS}


def embed_images(model, images, batch_size=256, features=False):
    """Image embeddings I = f_img(x) W_i of uint8 images (N, 3, 32, 32), in order, as a
    NumPy array (N, embed_dim); ``features=True`` gives f_img(x), the tower's output before
    the projection (what a linear probe reads)."""
    device = model.parameters()[0].device
    was_training = model.training
    model.eval()
    out = []
    with no_grad():
        for i in range(0, len(images), batch_size):
            x = to_device(images[i:i + batch_size], device)
            x = Tensor(normalize_images(x) if x.dtype == np.uint8 else x)
            out.append(to_numpy(model.image(x) if features else model.encode_image(x)))
    model.train(was_training)
    return np.concatenate(out)


def class_embeddings(model, templates, vocab, max_len, classnames=cifar10_data.CLASSES):
    """c_k (K, embed_dim) from ``templates``, on the model's device (no gradients)."""
    ids, lengths = captions.encode(prompts.prompts(templates, classnames), vocab, max_len)
    device = model.parameters()[0].device
    was_training = model.training
    model.eval()
    with no_grad():
        C = model.class_embeddings(to_device(ids, device), lengths, len(classnames))
    model.train(was_training)
    return C


def zero_shot(model, images, labels, vocab, max_len, templates=prompts.ZERO_SHOT_TEMPLATES,
              batch_size=256, image_emb=None):
    """Zero-shot classification of uint8 ``images`` with held-out ``templates``: a dict with
    "accuracy", "predictions", "probabilities" (softmax of s·Î cᵀ), and
    "accuracy_by_templates" (the accuracy with the first 1, 2, …, M templates)."""
    prompts.check_held_out(templates, vocab=vocab)
    I = image_emb if image_emb is not None else embed_images(model, images, batch_size)
    I = I / np.linalg.norm(I, axis=1, keepdims=True)
    s = float(model.logit_scale.item())
    labels = np.asarray(labels)
    by_templates, logits = [], None
    for M in range(1, len(templates) + 1):
        C = to_numpy(class_embeddings(model, templates[:M], vocab, max_len))
        logits = s * I @ C.T                                     # (N, K)
        by_templates.append(float((logits.argmax(1) == labels).mean()))
    z = logits - logits.max(axis=1, keepdims=True)
    P = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return {"accuracy": by_templates[-1], "predictions": logits.argmax(1),
            "probabilities": P.astype(np.float32), "accuracy_by_templates": by_templates}


def linear_probe(train_features, train_labels, test_features, test_labels, num_classes=10,
                 epochs=30, batch_size=256, lr=1e-2, weight_decay=1e-4, seed=0):
    """Accuracy on the test set of a softmax regression y = x W + b fitted on frozen
    features (the features standardised with the training mean and std; AdamW on the
    cross-entropy). Arrays in, a float out."""
    Xtr, Xte = (np.asarray(to_numpy(a), dtype=np.float32)
                for a in (train_features, test_features))
    ytr, yte = np.asarray(train_labels), np.asarray(test_labels)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    rng = np.random.default_rng(seed)
    probe = nn.Linear(Xtr.shape[1], int(num_classes), rng=rng)
    opt = optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for epoch in range(int(epochs)):
        order = rng.permutation(len(ytr))
        for i in range(0, len(ytr), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(probe(Tensor(Xtr[idx])), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with no_grad():
        predicted = probe(Tensor(Xte)).data.argmax(axis=1)
    return float((predicted == yte).mean())


# -- the command ---------------------------------------------------------------------------------
def add_arguments(parser):
    g = parser.add_argument_group("CLIP (--model clip: contrastive pretraining, zero-shot)")
    g.add_argument("--image-encoder", choices=IMAGE_ENCODERS, default="cnn",
                   help="the article's CNN branch or the ViT of --model transformer --mode image")
    g.add_argument("--text-encoder", choices=TEXT_ENCODERS, default="transformer",
                   help="the Transformer of --mode text or the article's LSTM branch")
    g.add_argument("--embed-dim", type=positive_int, default=128,
                   help="the shared embedding's width")
    g.add_argument("--templates", type=positive_int, default=len(prompts.ZERO_SHOT_TEMPLATES),
                   metavar="M", help=f"zero-shot with the first M of the "
                   f"{len(prompts.ZERO_SHOT_TEMPLATES)} held-out templates")
    g.add_argument("--probe-epochs", type=non_negative_int, default=30,
                   help="epochs of the linear probe (0: no probe)")


def build(args, vocab_size, rng):
    transformer.check_sizes(args)
    return CLIP(vocab_size, embed_dim=args.embed_dim, image_encoder=args.image_encoder,
                text_encoder=args.text_encoder, d_model=args.d_model, depth=args.depth,
                num_heads=args.heads, patch_size=args.patch_size, max_len=args.max_len, rng=rng)


def _check_args(args):
    if args.multitask or args.lam:
        raise UsageError("--multitask and --lam belong to the classifiers; --model clip "
                         "trains with the contrastive loss and --weight-decay")
    if args.templates > len(prompts.ZERO_SHOT_TEMPLATES):
        raise UsageError(f"--templates {args.templates}: there are "
                         f"{len(prompts.ZERO_SHOT_TEMPLATES)} held-out templates")
    transformer.check_sizes(args)


def train(args, say=print):
    """Pretrain, then test; returns the metrics it writes to DIR/metrics.json."""
    t_start = time.perf_counter()
    _check_args(args)
    if args.weight_decay is None:            # --weight-decay is shared with the fast recipe
        args.weight_decay = 0.1               # AdamW's decay of CLIP's weight matrices
    epochs = args.epochs or (1 if args.quick else 10)
    limit_train = args.limit_train or (cifar10.QUICK_TRAIN if args.quick else None)
    limit_test = args.limit_test or (cifar10.QUICK_TEST if args.quick else None)
    vocab = captions.caption_vocabulary()
    templates = prompts.ZERO_SHOT_TEMPLATES[:args.templates]
    model = build(args, len(vocab), np.random.default_rng(args.seed))
    optimizer = optim.AdamW(decay_groups(model, args.weight_decay), lr=args.lr)
    checkpoint = os.path.join(args.out, "model.npz")
    if args.resume and os.path.exists(checkpoint):
        check_resume(checkpoint, model, epochs)

    (x_train, y_train), (x_test, y_test) = cifar10.load_data(args)
    x_train, y_train = x_train[:limit_train], y_train[:limit_train]
    x_test, y_test = x_test[:limit_test], y_test[:limit_test]
    data_config = {"kind": "clip", "caption_seed": args.caption_seed,
                   "p_true": captions.P_TRUE, "p_wrong": captions.P_WRONG,
                   "max_len": args.max_len, "train_samples": len(y_train),
                   "test_samples": len(y_test)}
    train_pairs = pairs(x_train, y_train, args.caption_seed, vocab, args.max_len)
    test_pairs = pairs(x_test, y_test, args.caption_seed + 1, vocab, args.max_len)
    say(f"train: clip ({args.image_encoder} image tower, {args.text_encoder} text tower, "
        f"embed {args.embed_dim}) on {len(y_train)} (image, caption) pairs without labels, "
        f"{epochs} epoch(s), batch {args.batch_size}, AdamW lr {args.lr} weight decay "
        f"{args.weight_decay}, device {args.device} -> {args.out}")
    history = fit(model, train_pairs, test_pairs, epochs, optimizer,
                  loss_fn=ContrastiveObjective(), batch_size=args.batch_size,
                  device=args.device, seed=args.seed, progress=not args.no_progress,
                  checkpoint_path=checkpoint, resume=args.resume, checkpoint_extra=data_config,
                  eval_batch_size=args.eval_batch_size,
                  callbacks=[PrintEpochs(epochs, ("loss", "val_loss", "logit_scale",
                                                  "epoch_time"))] if args.no_progress else ())
    t_eval = time.perf_counter()
    out = test_metrics(model, x_test, y_test, vocab, args.max_len, templates,
                       args.eval_batch_size)
    if args.probe_epochs:
        feats = [embed_images(model, x, args.eval_batch_size, features=True)
                 for x in (x_train, x_test)]
        out["linear_probe_accuracy"] = linear_probe(feats[0], y_train, feats[1], y_test,
                                                    epochs=args.probe_epochs, seed=args.seed)
        out["linear_probe"] = (f"softmax regression on the frozen {args.image_encoder} tower's "
                               f"features ({feats[0].shape[1]}), {args.probe_epochs} epochs of "
                               f"AdamW on the {len(y_train)} training images' labels")
    out.update({"model": "clip", "image_encoder": args.image_encoder,
                "text_encoder": args.text_encoder, "embed_dim": args.embed_dim,
                "labels_used_in_pretraining": False, "epochs": len(history),
                "train_samples": len(y_train), "test_samples": len(y_test),
                "batch_size": args.batch_size, "lr": args.lr,
                "weight_decay": args.weight_decay, "seed": args.seed, "device": args.device,
                "parameters": transformer.parameter_count(model),
                "test_loss": history.history["val_loss"][-1] if len(history) else None,
                **cifar10.epoch_seconds(history),
                "eval_seconds": time.perf_counter() - t_eval,
                "wall_seconds": time.perf_counter() - t_start})
    cifar10.write_run(history, out, args.out, plots=write_plots)
    probe = out.get("linear_probe_accuracy")
    say(f"zero-shot test accuracy {out['zero_shot_accuracy']:.4f} with {len(templates)} "
        f"held-out templates" + (f", linear probe {probe:.4f}" if probe is not None else "")
        + f"; {out['seconds']:.1f} s over {out['epochs']} epoch(s)")
    return out


def test_metrics(model, x_test, y_test, vocab, max_len, templates, batch_size=256):
    """metrics.json's zero-shot numbers for the test images."""
    from .. import metrics
    result = zero_shot(model, x_test, y_test, vocab, max_len, templates, batch_size)
    summary_ = metrics.classification_summary(np.asarray(y_test), result["probabilities"], 10)
    out = {"zero_shot_accuracy": result["accuracy"],
           "zero_shot_templates": [t.format(a="a", name="{}") for t in templates],
           "zero_shot_templates_held_out": True,
           "zero_shot_accuracy_by_templates": result["accuracy_by_templates"],
           "zero_shot_macro_f1": summary_["macro_f1"], "zero_shot_macro_auc": summary_["macro_auc"],
           "logit_scale": float(model.logit_scale.item())}
    out.update({k: v for k, v in summary_.items() if k not in ("accuracy", "macro_f1",
                                                                 "macro_auc")})
    return out


def write_plots(history, out, folder):
    """loss.png (train vs test), confusion.png (zero-shot) and templates.png."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("warning: matplotlib is not installed, loss.png, confusion.png and templates.png "
              "were not written (pip install 'minimm[notebooks]')", file=sys.stderr)
        return
    from .. import plot
    if len(history):
        plot.plot_loss(history, os.path.join(folder, "loss.png"), val_label="test",
                       title="clip: contrastive loss (train vs test pairs)")
    plot.plot_confusion_matrix(out["confusion_matrix"], cifar10_data.CLASSES,
                               os.path.join(folder, "confusion.png"),
                               title="clip: zero-shot test confusion matrix")
    fig, ax = plot._figure((6, 4))
    acc = out["zero_shot_accuracy_by_templates"]
    ax.plot(np.arange(1, len(acc) + 1), acc, "o-", label="zero-shot (held-out templates)")
    if "linear_probe_accuracy" in out:
        ax.axhline(out["linear_probe_accuracy"], color="C1", ls="--", label="linear probe")
    ax.axhline(0.1, color="gray", ls=":", label="chance")
    ax.set(xlabel="number of prompt templates averaged", ylabel="test accuracy",
           title="clip: zero-shot accuracy against the number of templates", ylim=(0, 1))
    ax.legend()
    plot.save_figure(fig, os.path.join(folder, "templates.png"))


def check_resume(checkpoint, model, epochs):
    ckpt = load_checkpoint(checkpoint)
    restore(ckpt, model, source=f"--resume: {checkpoint}")
    if int(ckpt.get("epoch", 0)) > epochs:
        raise UsageError(f"--resume: {checkpoint} has done {ckpt['epoch']} epochs, more than "
                         f"--epochs {epochs} (--epochs counts the total)")


def evaluate(args, ckpt, say=print):
    """The ``evaluate`` command for a CLIP checkpoint: zero-shot on the test images it was
    tested on, with all held-out templates (no linear probe: that needs the training set)."""
    config = ckpt.get("config", {})
    vocab = captions.caption_vocabulary()
    try:
        model = CLIP.from_config(config)
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{args.checkpoint}: its config cannot build a CLIP model: {e}") from e
    restore(ckpt, model, source=args.checkpoint)
    model.to(args.device)
    _, (x_test, y_test) = cifar10.load_data(args)
    limit = args.limit_test or int(config.get("test_samples", len(y_test)))
    out = test_metrics(model, x_test[:limit], y_test[:limit], vocab, int(config["max_len"]),
                       prompts.ZERO_SHOT_TEMPLATES, args.batch_size)
    out.update({"model": "clip", "epochs": int(ckpt.get("epoch", 0)),
                "test_samples": min(limit, len(y_test)), "checkpoint": args.checkpoint})
    return out


def summary(metrics):
    lines = [f"clip, {metrics['epochs']} epoch(s) of contrastive pretraining, "
             f"{metrics['test_samples']} test images ({metrics.get('checkpoint', 'this run')})",
             f"zero-shot test accuracy {metrics['zero_shot_accuracy']:.4f} with "
             f"{len(metrics['zero_shot_templates'])} held-out templates (macro F1 "
             f"{metrics['zero_shot_macro_f1']:.4f})"]
    if metrics.get("linear_probe_accuracy") is not None:
        lines.append(f"linear probe test accuracy {metrics['linear_probe_accuracy']:.4f}")
    return "\n".join(lines)


register("clip", sys.modules[__name__])
