"""The ``demo`` command: a two-layer network learns 3-class 2-D spirals in seconds, with no
data to download — and shows that :func:`minimm.train.fit` trains any model: this one has
its own batch keys ("x", "y") and its own loss function.
"""
import time

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..autograd import Tensor
from ..data.loader import Loader
from ..data.spiral import spiral_data
from ..train import Callback, evaluate, fit


def loss_fn(model, batch):
    """The mean cross-entropy of the logits, and the batch's accuracy (the loss contract)."""
    logits = model(Tensor(batch["x"]))
    accuracy = (logits.data.argmax(axis=1) == batch["y"]).mean()
    return F.cross_entropy(logits, batch["y"]), {"accuracy": accuracy}


class _PrintSteps(Callback):
    def __init__(self, steps, every, say):
        self.steps, self.every, self.say = steps, every, say

    def on_epoch_end(self, epoch, logs, model):
        step = epoch - 1                  # one epoch is one step (full batch)
        if step % self.every == 0 or epoch == self.steps:
            self.say(f"step {step:4d}  loss {logs['loss']:.4f}")


def run_demo(steps=300, hidden=64, lr=0.01, seed=0, device="cpu", log_every=50, print_fn=print):
    """Train Linear(2, hidden) + ReLU + Linear(hidden, 3) with Adam on spirals, full-batch
    (one epoch of ``fit`` is one step); return {"losses", "train_accuracy", "test_accuracy"}."""
    X, y = spiral_data(seed=seed)
    order = np.random.default_rng(seed + 1).permutation(len(X))
    split = int(0.8 * len(X))
    train = {"x": X[order[:split]], "y": y[order[:split]]}
    test = {"x": X[order[split:]], "y": y[order[split:]]}
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(2, hidden, rng=rng), nn.ReLU(), nn.Linear(hidden, 3, rng=rng))
    say = print_fn or (lambda *a: None)
    say(f"demo: 3-class spirals, {split} train / {len(X) - split} test points; "
        f"Linear(2, {hidden}) + ReLU + Linear({hidden}, 3), Adam lr={lr}, {steps} full-batch "
        f"steps on {device}")
    t0 = time.perf_counter()
    history = fit(model, Loader(train, batch_size=split, shuffle=False), epochs=steps,
                  optimizer=optim.Adam(model.parameters(), lr=lr), loss_fn=loss_fn,
                  device=device, progress=False, callbacks=[_PrintSteps(steps, log_every, say)])
    result = {"losses": history.history["loss"],
              "train_accuracy": evaluate(model, train, loss_fn)["accuracy"],
              "test_accuracy": evaluate(model, test, loss_fn)["accuracy"]}
    say(f"final train accuracy {result['train_accuracy']:.3f}, test accuracy "
        f"{result['test_accuracy']:.3f} (chance 0.333) in {time.perf_counter() - t0:.1f} s")
    return result


__all__ = ["run_demo", "loss_fn"]
