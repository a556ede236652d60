"""The command line: ``python -m minimm <command>`` (or ``minimm <command>`` once installed).

    python -m minimm demo                      # train a tiny classifier in seconds, no download
    python -m minimm bench [--batch-sizes 32,128] [--repeats N] [--no-torch] [--only image,text]

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


def build_parser():
    parser = argparse.ArgumentParser(prog="minimm", description="minimm: a from-scratch "
                                     "multimodal deep-learning library (NumPy / CuPy)")
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    subparsers.required = True
    add_demo_parser(subparsers)
    add_bench_parser(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
