"""Model size (bytes on disk) against test accuracy for a trained chapter-08 model.

    python tools/efficiency/compression_table.py --checkpoint RUN/model.npz \
        --data cifar-10-binary.tar.gz --out RUN/compression [--finetune-epochs 1]

Rows: float32, float16, int8 (per-channel, dequantised on load); magnitude pruning to 50/80/90 %
one-shot (no fine-tuning) and iterative (0.5 → 0.8 → 0.9, fine-tuning after each prune with
the masks kept by ``Pruning.attach``), stored sparse (bit mask + nonzero float32 values); and
90 % + int8. Each size is the file ``compress.save_compressed`` wrote. Writes table.json,
table.md and size_accuracy.png into --out.
"""
import argparse
import json
import os
import time


from minimm import compress, optim
from minimm.data import captions, cifar10
from minimm.models import MultiModalModel
from minimm.serialization import load
from minimm.experiments.cifar10 import Objective, caption_dataset
from minimm.train import evaluate, fit


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--finetune-lr", type=float, default=2e-4)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    ckpt = load(args.checkpoint)
    config = ckpt["config"]
    (x_train, y_train), (x_test, y_test) = cifar10.load_cifar10(path=args.data)
    x_train, y_train = x_train[:args.limit_train], y_train[:args.limit_train]
    x_test, y_test = x_test[:args.limit_test], y_test[:args.limit_test]
    vocab = captions.caption_vocabulary()
    seed, max_len = int(config["caption_seed"]), int(config["max_len"])
    train = caption_dataset(x_train, y_train, seed, vocab, max_len)
    test = caption_dataset(x_test, y_test, seed + 1, vocab, max_len)

    def fresh():
        model = MultiModalModel.from_config(config)
        model.load_state_dict(ckpt["model"])
        return model

    rows = []

    def record(name, model, dtype, sparse, finetuned, seconds=0.0):
        path = os.path.join(args.out, f"{name}.npz")
        size = compress.save_compressed(model, path, dtype, sparse=sparse)
        clone = MultiModalModel.from_config(config)
        compress.load_compressed(path, clone)                 # inference from the file
        t0 = time.perf_counter()
        acc = evaluate(clone, test, Objective())["accuracy"]
        weights = [p for _, _, p in compress.compressible(clone)]
        zeros = sum(int((p.data == 0).sum()) for p in weights) / sum(p.size for p in weights)
        rows.append({"name": name, "dtype": dtype, "sparse": sparse, "finetuned": finetuned,
                     "sparsity": zeros, "bytes": size, "test_accuracy": acc,
                     "finetune_seconds": seconds, "eval_seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)

    for dtype in compress.DTYPES:
        record(dtype, fresh(), dtype, False, False)
    for s in (0.5, 0.8, 0.9):                                # one-shot, no fine-tuning
        model = fresh()
        compress.prune(model, s)
        record(f"prune{int(s * 100)}_oneshot", model, "float32", True, False)
    model, pruning, spent = fresh(), None, 0.0                # iterative, fine-tuned
    for s in (0.5, 0.8, 0.9):
        pruning = compress.prune(model, s, previous=pruning)
        opt = pruning.attach(optim.Adam(model.parameters(), lr=args.finetune_lr))
        t0 = time.perf_counter()
        fit(model, train, epochs=args.finetune_epochs, optimizer=opt, loss_fn=Objective(),
            progress=False, seed=1000 + int(s * 100))
        spent += time.perf_counter() - t0
        record(f"prune{int(s * 100)}_finetuned", model, "float32", True, True, spent)
    record("prune90_finetuned_int8", model, "int8", True, True, spent)

    with open(os.path.join(args.out, "table.json"), "w") as f:
        json.dump({"rows": rows, "checkpoint": args.checkpoint, "test_samples": len(y_test),
                   "finetune_epochs_per_round": args.finetune_epochs,
                   "finetune_lr": args.finetune_lr}, f, indent=2)
    base = rows[0]["bytes"]
    lines = ["| model | stored as | sparsity | bytes on disk | × smaller | test accuracy |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        kind = ("sparse: bit mask + nonzero " + ("int8 + scales" if r["dtype"] == "int8"
                                                else "float32") if r["sparse"] else
                {"float32": "float32", "float16": "float16",
                 "int8": "int8 + per-channel float32 scales"}[r["dtype"]])
        lines.append(f"| {r['name']} | {kind} | {r['sparsity']:.3f} | {r['bytes']:,} | "
                     f"{base / r['bytes']:.2f} | {r['test_accuracy']:.4f} |")
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, os.path.join(args.out, "size_accuracy.png"))


def plot(rows, path):
    from matplotlib.figure import Figure

    from minimm.plot import save_figure
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    groups = {"dense (float32 / float16 / int8)": lambda r: not r["sparse"],
              "pruned, one-shot": lambda r: r["sparse"] and not r["finetuned"],
              "pruned, fine-tuned": lambda r: r["sparse"] and r["finetuned"]}
    for (label, keep), marker in zip(groups.items(), "os^"):
        sel = [r for r in rows if keep(r)]
        ax.plot([r["bytes"] / 1024 for r in sel], [r["test_accuracy"] for r in sel], marker,
                label=label, markersize=8)
        for r in sel:
            ax.annotate(r["name"], (r["bytes"] / 1024, r["test_accuracy"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("model size on disk (KiB, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Chapter-08 model on CIFAR-10: size vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
