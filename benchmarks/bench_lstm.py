"""Time the article's text branch, Embedding(1000, 64) + LSTM(64 -> 128), forward + backward.

    python tools/bench_lstm.py [--batch 128] [--steps 16] [--repeats 30] [--profile]

Runs minimm and (if installed) PyTorch in the same process, interleaved, and prints median
milliseconds per step and the ratio. The loss is Σ h_T ⊙ G for a fixed random G, so the
backward goes through every time step.
"""
import argparse
import time

import numpy as np

import minimm as mm
from minimm import nn


def minimm_step(emb, lstm, ids, G):
    emb.zero_grad()
    lstm.zero_grad()
    _, (h, _) = lstm(emb(ids))
    (h * G).sum().backward()


def make_torch(emb, lstm):
    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t_emb = torch.nn.Embedding(1000, 64)
    t_lstm = torch.nn.LSTM(64, 128, batch_first=True)
    with torch.no_grad():
        t_emb.weight.copy_(torch.from_numpy(emb.W.numpy()))
        t_lstm.weight_ih_l0.copy_(torch.from_numpy(lstm.W.numpy().T))
        t_lstm.weight_hh_l0.copy_(torch.from_numpy(lstm.U.numpy().T))
        t_lstm.bias_ih_l0.copy_(torch.from_numpy(lstm.b.numpy()))
        t_lstm.bias_hh_l0.zero_()
    return torch, t_emb, t_lstm


def torch_step(torch, t_emb, t_lstm, ids, G):
    t_emb.zero_grad()
    t_lstm.zero_grad()
    _, (h, _) = t_lstm(t_emb(ids))
    (h[0] * G).sum().backward()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    emb, lstm = nn.Embedding(1000, 64, rng=rng), nn.LSTM(64, 128, rng=rng)
    ids = rng.integers(0, 1000, size=(args.batch, args.steps))
    G = rng.standard_normal((args.batch, 128)).astype(np.float32)
    G_mm = mm.tensor(G)

    try:
        torch, t_emb, t_lstm = make_torch(emb, lstm)
        t_ids, t_G = torch.from_numpy(ids), torch.from_numpy(G)
        # same parameters, same loss: the gradients must agree before timing means anything
        minimm_step(emb, lstm, ids, G_mm)
        torch_step(torch, t_emb, t_lstm, t_ids, t_G)
        err = np.abs(lstm.U.grad.numpy() - t_lstm.weight_hh_l0.grad.numpy().T).max()
        print(f"max |dU minimm - dU torch| = {err:.2e}")
    except ImportError:
        torch = None

    if args.profile:
        import cProfile
        import pstats
        cProfile.runctx("for _ in range(10): minimm_step(emb, lstm, ids, G_mm)", globals(),
                        locals(), "/tmp/bench_lstm.prof")
        pstats.Stats("/tmp/bench_lstm.prof").sort_stats("tottime").print_stats(15)

    times = {"minimm": [], "torch": []}
    for _ in range(3):  # warm-up
        minimm_step(emb, lstm, ids, G_mm)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        minimm_step(emb, lstm, ids, G_mm)
        times["minimm"].append(time.perf_counter() - t0)
        if torch is not None:
            t0 = time.perf_counter()
            torch_step(torch, t_emb, t_lstm, t_ids, t_G)
            times["torch"].append(time.perf_counter() - t0)
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items() if v}
    line = f"Embedding(1000,64)+LSTM(64->128) T={args.steps} B={args.batch} fwd+bwd: "
    line += f"minimm {med['minimm']:.2f} ms"
    if "torch" in med:
        line += f", torch {med['torch']:.2f} ms, ratio {med['minimm'] / med['torch']:.2f}x"
    print(line)


if __name__ == "__main__":
    main()
