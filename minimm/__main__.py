"""The command line: ``python -m minimm <command>`` (or ``minimm <command>`` once installed).

    python -m minimm demo                      # train a tiny classifier in seconds, no download
    python -m minimm bench [--batch-sizes 32,128] [--repeats N] [--no-torch] [--only image,text]
    python -m minimm train --data cifar-10-binary.tar.gz --model multimodal --out runs/mm
    python -m minimm evaluate --checkpoint runs/mm/model.npz --data cifar-10-binary.tar.gz

Each command is a ``add_<name>_parser(subparsers)`` function that registers its options and
its handler (``set_defaults(func=...)``), so adding one is adding one function.
"""
import argparse
import sys
import time


def _csv(cast):
    def parse(text):
        try:
            return [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return parse


def _exit_code(run):
    """A handler returning 0, or the code of the SystemExit by which ``run`` reported an error
    (its message already on stderr)."""
    def main(args):
        try:
            run(args)
        except SystemExit as e:
            return e.code
        return 0
    return main


# -- demo ---------------------------------------------------------------------------------------
def spiral_data(n_per_class=200, n_classes=3, noise=0.2, seed=0):
    """Interleaved 2-D spirals, one arm per class (not linearly separable): X (N, 2), y (N,)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    r = np.tile(np.linspace(0.05, 1.0, n_per_class), n_classes)
    y = np.repeat(np.arange(n_classes), n_per_class)
    angle = y * (2 * np.pi / n_classes) + r * 4.0 + rng.standard_normal(r.shape) * noise
    X = np.stack([r * np.sin(angle), r * np.cos(angle)], axis=1).astype(np.float32)
    return X, y


def run_demo(steps=300, hidden=64, lr=0.01, seed=0, device="cpu", log_every=50, print_fn=print):
    """Train Linear(2, hidden) + ReLU + Linear(hidden, 3) with Adam on spirals; return
    {"losses", "train_accuracy", "test_accuracy"}."""
    import numpy as np

    import minimm as mm
    from minimm import functional as F, nn, optim

    X, y = spiral_data(seed=seed)
    order = np.random.default_rng(seed + 1).permutation(len(X))
    split = int(0.8 * len(X))
    train, test = order[:split], order[split:]
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(2, hidden, rng=rng), nn.ReLU(),
                          nn.Linear(hidden, 3, rng=rng)).to(device)
    opt = optim.Adam(model.parameters(), lr=lr)
    X_train, X_test = mm.tensor(X[train], device=device), mm.tensor(X[test], device=device)
    y_train = mm.tensor(y[train], device=device)

    def accuracy(inputs, labels):
        with mm.no_grad():
            predicted = mm.to_numpy(model(inputs).data).argmax(axis=1)
        return float((predicted == labels).mean())

    say = print_fn or (lambda *a: None)
    say(f"demo: 3-class spirals, {len(train)} train / {len(test)} test points; "
        f"Linear(2, {hidden}) + ReLU + Linear({hidden}, 3), Adam lr={lr}, {steps} full-batch "
        f"steps on {device}")
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        loss = F.cross_entropy(model(X_train), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % log_every == 0 or step == steps - 1:
            say(f"step {step:4d}  loss {losses[-1]:.4f}")
    result = {"losses": losses, "train_accuracy": accuracy(X_train, y[train]),
              "test_accuracy": accuracy(X_test, y[test])}
    say(f"final train accuracy {result['train_accuracy']:.3f}, test accuracy "
        f"{result['test_accuracy']:.3f} (chance 0.333) in {time.perf_counter() - t0:.1f} s")
    return result


def add_demo_parser(subparsers):
    p = subparsers.add_parser("demo", help="train a tiny classifier on synthetic spirals "
                                           "(seconds, no download)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    def main(args):
        run_demo(args.steps, args.hidden, args.lr, args.seed, args.device)
        return 0
    p.set_defaults(func=main)


# -- bench --------------------------------------------------------------------------------------
def add_bench_parser(subparsers):
    p = subparsers.add_parser("bench", help="time train steps of the reference models "
                                            "(side by side with PyTorch if installed)")
    p.add_argument("--batch-sizes", type=_csv(int), default=[32, 128], metavar="B1,B2")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per model (median)")
    p.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    p.add_argument("--only", type=_csv(str), default=None, metavar="NAME,...",
                   help="benchmarks to run (default: all registered: image, text, fused, …)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)

    def main(args):
        from .bench import run_benchmarks
        try:
            run_benchmarks(args.batch_sizes, args.repeats, use_torch=not args.no_torch,
                           only=args.only, device=args.device, seed=args.seed)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    p.set_defaults(func=main)


# -- train / evaluate (the article's §4.3 / §5.2 case study) -----------------------------------
QUICK_TRAIN, QUICK_TEST = 2000, 500
NO_DATA_HELP = ("no CIFAR-10 data given: pass --data PATH (the official cifar-10-binary.tar.gz "
                "or its extracted cifar-10-batches-bin folder), or --download to fetch it once "
                "from {url} into the cache {cache} (MD5-verified; later runs with --download "
                "reuse the cache). Offline, copy the archive from a machine that has it.")


def _load_cifar10(args):
    """((x_train, y_train), (x_test, y_test)) from --data, or the cache with --download."""
    from .data import cifar10
    if args.data is None and not args.download:
        raise SystemExit(_fail(NO_DATA_HELP.format(url=cifar10.URL, cache=cifar10.cache_dir())))
    try:
        if args.data is not None:
            return cifar10.load_cifar10(path=args.data)
        return cifar10.load_cifar10(download=True)
    except (OSError, ValueError) as e:
        raise SystemExit(_fail(f"cannot load CIFAR-10: {e}"))


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def _test_metrics(result, config):
    """metrics.json's numbers from an :func:`minimm.train.evaluate` result."""
    import numpy as np

    from . import metrics
    from .data import cifar10
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
    out = {"test_accuracy": summary["accuracy"], "test_loss": float(result["loss"]),
           "task_accuracy": {"class": summary["accuracy"], "superclass": super_accuracy},
           "superclass_source": "super_head" if "super_probabilities" in result else "class_head",
           "superclass_auc": super_auc,
           "macro_f1": summary["macro_f1"], "macro_auc": summary["macro_auc"]}
    out.update({k: v for k, v in summary.items() if k != "accuracy"})
    return out


def _json_safe(obj):
    """NaN -> None so that metrics.json is strict JSON."""
    import math
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def run_train(args, print_fn=print):
    """The ``train`` command; returns the metrics dict it writes to DIR/metrics.json."""
    import os

    import numpy as np

    from . import optim
    from .data import captions
    from .models import MultiModalModel
    from .train import caption_dataset, fit, write_json

    say = print_fn or (lambda *a, **k: None)
    t_start = time.perf_counter()
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 10)
    limit_train = args.limit_train if args.limit_train is not None else (
        QUICK_TRAIN if args.quick else None)
    limit_test = args.limit_test if args.limit_test is not None else (
        QUICK_TEST if args.quick else None)
    for name, value in (("--epochs", epochs), ("--batch-size", args.batch_size),
                        ("--limit-train", limit_train), ("--limit-test", limit_test)):
        if value is not None and value < (0 if name == "--epochs" else 1):
            raise SystemExit(_fail(f"train: {name} must be positive, got {value}"))
    if args.lr <= 0 or args.lam < 0:
        raise SystemExit(_fail(f"train: need --lr > 0 and --lam >= 0, got {args.lr}, {args.lam}"))
    from . import backend
    try:
        device = backend.check_device(args.device)
    except (RuntimeError, ValueError) as e:
        raise SystemExit(_fail(str(e)))

    (x_train, y_train), (x_test, y_test) = _load_cifar10(args)
    x_train, y_train = x_train[:limit_train], y_train[:limit_train]
    x_test, y_test = x_test[:limit_test], y_test[:limit_test]
    vocab = captions.caption_vocabulary()
    data_config = {"caption_seed": args.caption_seed, "p_true": captions.P_TRUE,
                   "p_wrong": captions.P_WRONG, "max_len": args.max_len,
                   "train_samples": len(y_train), "test_samples": len(y_test)}
    train = caption_dataset(x_train, y_train, args.caption_seed, vocab, args.max_len,
                            superlabels=args.multitask)
    # the test captions are drawn with their own seed: no caption is shared with training
    test = caption_dataset(x_test, y_test, args.caption_seed + 1, vocab, args.max_len,
                           superlabels=args.multitask)
    model = MultiModalModel(len(vocab), 10, args.model, 2 if args.multitask else None,
                            rng=np.random.default_rng(args.seed))
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    os.makedirs(args.out, exist_ok=True)
    checkpoint = os.path.join(args.out, "model.npz")
    say(f"train: {args.model} model{' + superclass head' if args.multitask else ''}, "
        f"{len(y_train)} train / {len(y_test)} test images, {epochs} epoch(s), batch "
        f"{args.batch_size}, Adam lr {args.lr}, lam {args.lam}, device {device} -> {args.out}")
    history = fit(model, train, val_data=test, epochs=epochs, batch_size=args.batch_size,
                  optimizer=optimizer, lam=args.lam, device=device, seed=args.seed,
                  progress=not args.no_progress, checkpoint_path=checkpoint,
                  resume=args.resume, checkpoint_extra=data_config,
                  eval_batch_size=args.eval_batch_size,
                  callbacks=[_epoch_line(epochs)] if args.no_progress else None)
    if not os.path.exists(checkpoint):            # e.g. --epochs 0: still leave a model
        from .train import save_checkpoint
        save_checkpoint(checkpoint, model, optimizer, history, 0, data_config,
                        {"seed": args.seed, "batch_size": args.batch_size, "lam": args.lam})
    result = history.val_result
    if result is None:                            # nothing trained now (resumed a finished run)
        from .train import evaluate
        result = evaluate(model, test, args.eval_batch_size, lam=args.lam)
    epoch_times = history.history.get("epoch_time", [])
    train_times = history.history.get("train_time", [])
    out = _test_metrics(result, model.config())
    out.update({"model": args.model, "multitask": bool(args.multitask), "epochs": len(history),
                "train_samples": len(y_train), "test_samples": len(y_test),
                "batch_size": args.batch_size, "lr": args.lr, "lam": args.lam,
                "seed": args.seed, "device": device,
                "seconds": float(sum(epoch_times)),
                "seconds_per_epoch": float(np.mean(epoch_times)) if epoch_times else None,
                "train_seconds_per_epoch": float(np.mean(train_times)) if train_times else None,
                "wall_seconds": time.perf_counter() - t_start})
    out = _json_safe(out)
    history.to_json(os.path.join(args.out, "history.json"))
    write_json(out, os.path.join(args.out, "metrics.json"))
    _write_plots(history, out, args.out, say)
    say(f"test accuracy {out['test_accuracy']:.4f}, superclass accuracy "
        f"{out['task_accuracy']['superclass']:.4f}, macro F1 {out['macro_f1']:.4f}, macro AUC "
        f"{out['macro_auc']:.4f}; {out['seconds']:.1f} s over {out['epochs']} epoch(s)")
    return out


def _write_plots(history, out, folder, say):
    import os
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("warning: matplotlib is not installed, accuracy.png and confusion.png were not "
              "written (pip install 'minimm[notebooks]')", file=sys.stderr)
        return
    from . import plot
    from .data import cifar10
    if len(history):
        plot.plot_accuracy(history, os.path.join(folder, "accuracy.png"),
                           title=f"{out['model']} model: accuracy (train vs test)",
                           val_label="test")
        plot.plot_loss(history, os.path.join(folder, "loss.png"),
                       title=f"{out['model']} model: loss (train vs test)", val_label="test")
    plot.plot_confusion_matrix(out["confusion_matrix"], cifar10.CLASSES,
                               os.path.join(folder, "confusion.png"),
                               title=f"{out['model']} model: test confusion matrix")


def _epoch_line(epochs):
    """Without a progress bar, one line per epoch on stderr, so a long run still shows life."""
    def report(epoch, logs, model):
        keys = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time")
        print(f"epoch {epoch + 1}/{epochs} " + "  ".join(
            f"{k} {logs[k]:.4f}" for k in keys if k in logs), file=sys.stderr)
    return report


def add_train_parser(subparsers):
    p = subparsers.add_parser("train", help="train the article's model (§4.3/§5.2) on CIFAR-10 "
                                            "with synthetic captions")
    src = p.add_argument_group("data")
    src.add_argument("--data", default=None, metavar="PATH",
                     help="cifar-10-binary.tar.gz or its extracted folder")
    src.add_argument("--download", action="store_true",
                     help="download the official archive into the cache (once)")
    p.add_argument("--model", default="multimodal", choices=["multimodal", "image", "text"])
    p.add_argument("--epochs", type=int, default=None, help="default 10 (1 with --quick)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--lam", type=float, default=0.0, help="λ of the L2 penalty λR(θ)")
    p.add_argument("--multitask", action="store_true",
                   help="add a second head for vehicle/animal; loss Σℓ + λR(θ)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--resume", action="store_true", help="continue from DIR/model.npz")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK_TRAIN} train / {QUICK_TEST} test images, 1 epoch")
    p.add_argument("--limit-train", type=int, default=None, metavar="N",
                   help="use the first N training images")
    p.add_argument("--limit-test", type=int, default=None, metavar="N",
                   help="use the first N test images")
    p.add_argument("--seed", type=int, default=0, help="initial weights and shuffling")
    p.add_argument("--caption-seed", type=int, default=0,
                   help="train captions use it, test captions it + 1")
    p.add_argument("--max-len", type=int, default=16, help="caption length in tokens")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")

    p.set_defaults(func=_exit_code(run_train))


def run_evaluate(args, print_fn=print):
    """The ``evaluate`` command: the checkpoint's model on the test set it was tested on
    (same images, same caption seed); prints and returns the metrics."""
    import json

    from .models import MultiModalModel
    from .serialization import load
    from .train import caption_dataset, evaluate
    from . import backend
    from .data import captions

    try:
        ckpt = load(args.checkpoint)
    except (OSError, ValueError) as e:
        raise SystemExit(_fail(str(e)))
    config = ckpt.get("config", {})
    missing = [k for k in ("mode", "vocab_size", "num_classes", "caption_seed", "max_len")
               if k not in config]
    if missing:
        raise SystemExit(_fail(f"evaluate: {args.checkpoint} lacks the model config "
                               f"{missing}; was it written by `python -m minimm train`?"))
    try:
        device = backend.check_device(args.device)
    except (RuntimeError, ValueError) as e:
        raise SystemExit(_fail(str(e)))
    model = MultiModalModel.from_config(config)
    model.load_state_dict(ckpt["model"])
    model.to(device)
    _, (x_test, y_test) = _load_cifar10(args)
    limit = args.limit_test if args.limit_test is not None else int(config["test_samples"])
    x_test, y_test = x_test[:limit], y_test[:limit]
    vocab = captions.caption_vocabulary()
    if len(vocab) != int(config["vocab_size"]):
        raise SystemExit(_fail(f"evaluate: the checkpoint's vocabulary has "
                               f"{config['vocab_size']} words, this minimm's captions "
                               f"{len(vocab)}"))
    test = caption_dataset(x_test, y_test, int(config["caption_seed"]) + 1, vocab,
                           int(config["max_len"]), superlabels=model.multitask,
                           p_true=config.get("p_true"), p_wrong=config.get("p_wrong"))
    lam = float(ckpt.get("fit", {}).get("lam", 0.0))
    result = evaluate(model, test, args.batch_size, lam=lam)
    out = _json_safe(_test_metrics(result, model.config()))
    out.update({"model": model.mode, "multitask": model.multitask,
                "epochs": int(ckpt.get("epoch", 0)), "test_samples": len(y_test),
                "checkpoint": args.checkpoint})
    if print_fn:
        print_fn(json.dumps(out, indent=2))
    return out


def add_evaluate_parser(subparsers):
    p = subparsers.add_parser("evaluate", help="test metrics of a checkpoint written by train")
    p.add_argument("--checkpoint", required=True, metavar="DIR/model.npz")
    p.add_argument("--data", default=None, metavar="PATH")
    p.add_argument("--download", action="store_true")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit-test", type=int, default=None, metavar="N",
                   help="default: the number the checkpoint was tested on")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    p.set_defaults(func=_exit_code(run_evaluate))


def build_parser():
    parser = argparse.ArgumentParser(prog="minimm", description="minimm: a from-scratch "
                                     "multimodal deep-learning library (NumPy / CuPy)")
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    subparsers.required = True
    add_demo_parser(subparsers)
    add_bench_parser(subparsers)
    add_train_parser(subparsers)
    add_evaluate_parser(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
