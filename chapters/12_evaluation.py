# %% [markdown]
# # 12. Evaluation: what the numbers say, and what they hide
#
# *Article: "多模态大模型：技术原理与实战", §9.4 如何评估多模态大模型的性能 (how to evaluate the
# performance of a multimodal large model).*
#
# The article answers its own question with a list: accuracy, the F1 score, the confusion
# matrix, ROC curves and the AUC, and a warning that imbalanced data ("不平衡数据") calls for
# more than accuracy. This chapter takes each of those apart on the model of chapter 8 — the
# fused CNN + LSTM classifier, trained the same way — and adds one question the list leaves out:
# when the model says it is 90 % sure, is it right 90 % of the time (**calibration**)?
#
# 1. accuracy and the confusion matrix;
# 2. precision, recall and F1 per class, each read off the confusion matrix, and their macro
#    averages;
# 3. one-vs-rest ROC curves and the AUC: the threshold sweep, the trapezoid rule, and ties;
# 4. what these numbers hide on an imbalanced test set;
# 5. calibration: the reliability diagram, the expected calibration error, and temperature
#    scaling.
#
# The metrics live in `minimm/metrics.py` (plain NumPy, no scikit-learn needed; the tests
# compare them with scikit-learn's definitions written out as loops).

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import minimm as mm
from minimm import metrics, viz
from minimm.data import CLASSES, captions, standin
from minimm.models import MultiModalModel
from minimm.experiments.cifar10 import Objective, caption_dataset
from minimm.train import evaluate, fit

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: the small stand-in
SEED = 0
print("minimm", mm.__version__, "| quick mode:", QUICK)

# %% [markdown]
# ## 12.1 The model to evaluate
#
# Exactly chapter 8's setting: the real CIFAR-10 when `MINIMM_CIFAR10` points at a local copy
# (the first 10,000 training and 2,000 test images, 3 epochs), otherwise — and always in quick
# mode — the labelled synthetic stand-in; one seeded, noisy synthetic caption per image; the
# fused model trained by `fit` with Adam $10^{-3}$ and batch 32. `evaluate` returns, for every
# test image, the softmax probabilities $p_{n,k}$ and the prediction
# $\hat y_n = \arg\max_k p_{n,k}$.

# %%
(x_train, y_train), (x_test, y_test), path = standin.case_study_images(QUICK, seed=SEED)
EPOCHS = 3 if path is not None else (2 if QUICK else 4)
print(f"real CIFAR-10 from {path}" if path else
      "NOTE: a SYNTHETIC STAND-IN for CIFAR-10, not the real data; the numbers are about it",
      f"| {len(y_train)} train / {len(y_test)} test images, {EPOCHS} epochs")
vocab = captions.caption_vocabulary()
train = caption_dataset(x_train, y_train, caption_seed=SEED, vocab=vocab)
test = caption_dataset(x_test, y_test, caption_seed=SEED + 1, vocab=vocab)

model = MultiModalModel(len(vocab), mode="multimodal", rng=np.random.default_rng(SEED))
t0 = time.perf_counter()
fit(model, train, epochs=EPOCHS, batch_size=32, loss_fn=Objective(), progress=False, seed=SEED,
    optimizer=mm.optim.Adam(model.parameters(), lr=1e-3))
result = evaluate(model, test, Objective())
print(f"trained in {time.perf_counter() - t0:.1f} s")
P, y, y_hat = result["probabilities"].astype(np.float64), result["labels"], result["predictions"]
K = len(CLASSES)
print("probabilities", P.shape, "| labels", y.shape, "| predictions", y_hat.shape)

# %% [markdown]
# ## 12.2 Accuracy and the confusion matrix
#
# Accuracy is the share of right answers, $\text{acc} = \frac1N\sum_n [\hat y_n = y_n]$. It
# is one number for all classes; the **confusion matrix** keeps them apart:
#
# $$C_{ij} = \#\{n : y_n = i,\ \hat y_n = j\} \qquad (\text{row } i = \text{true class},\
# \text{column } j = \text{prediction}).$$
#
# The diagonal holds the right answers, so $\text{acc} = \operatorname{tr}(C)/N$; row $i$ sums
# to the number of images of class $i$, column $j$ to the number of predictions of $j$.

# %%
C = metrics.confusion_matrix(y, y_hat, K)
acc = metrics.accuracy(y, y_hat)
print(f"accuracy {acc:.4f} = trace(C) / N = {np.trace(C)} / {C.sum()}")
assert np.trace(C) / C.sum() == acc

fig, ax = plt.subplots(figsize=(6.5, 5.5))
im = ax.imshow(C, cmap="Blues")
for i in range(K):
    for j in range(K):
        ax.text(j, i, C[i, j], ha="center", va="center", fontsize=7,
                color="white" if C[i, j] > C.max() / 2 else "black")
ax.set_xticks(range(K), CLASSES, rotation=45, ha="right", fontsize=8)
ax.set_yticks(range(K), CLASSES, fontsize=8)
ax.set(xlabel="predicted class j", ylabel="true class i",
       title=f"confusion matrix C (test accuracy {acc:.3f})")
fig.colorbar(im, ax=ax, label="number of test images")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 12.3 Precision, recall and F1, from the confusion matrix
#
# Fix a class $c$ and call it "positive". Every sample falls in one of four cells:
#
# | | predicted $c$ | predicted not $c$ |
# |---|---|---|
# | **is $c$** | true positive: $TP_c = C_{cc}$ | false negative: $FN_c = \sum_{j} C_{cj} - C_{cc}$ |
# | **is not $c$** | false positive: $FP_c = \sum_i C_{ic} - C_{cc}$ | true negative: the rest |
#
# $FN_c$ is row $c$ without its diagonal, $FP_c$ column $c$ without its diagonal. Then
#
# $$P_c = \frac{TP_c}{TP_c + FP_c}\ (\text{of the predictions } c, \text{ the share that is } c),
# \qquad R_c = \frac{TP_c}{TP_c + FN_c}\ (\text{of the images of } c, \text{ the share found}),$$
#
# $$F1_c = \frac{2 P_c R_c}{P_c + R_c} = \frac{2\,TP_c}{2\,TP_c + FP_c + FN_c},$$
#
# the harmonic mean, which is small when either is small. The **macro** average is the plain
# mean over classes, $\frac1K\sum_c F1_c$: every class counts the same, however many images it
# has. (The **micro** average pools the cells first: $\sum_c TP_c / \sum_c (TP_c + FP_c)$ — but
# every wrong prediction is one $FP$ and one $FN$, so for single-label classification micro
# precision = micro recall = micro F1 = accuracy. That is why the macro average is the one that
# says something new.) Below, the formulas on $C$ by hand, against `metrics.precision_recall_f1`:

# %%
TP = np.diag(C).astype(np.float64)
FP = C.sum(axis=0) - TP                     # column sums minus the diagonal
FN = C.sum(axis=1) - TP                     # row sums minus the diagonal
with np.errstate(invalid="ignore", divide="ignore"):
    P_c = np.where(TP + FP > 0, TP / (TP + FP), 0.0)      # 0/0 -> 0, as scikit-learn does
    R_c = np.where(TP + FN > 0, TP / (TP + FN), 0.0)
    F1_c = np.where(2 * TP + FP + FN > 0, 2 * TP / (2 * TP + FP + FN), 0.0)
precision, recall, f1 = metrics.precision_recall_f1(y, y_hat, K, average=None)
np.testing.assert_allclose(precision, P_c)
np.testing.assert_allclose(recall, R_c)
np.testing.assert_allclose(f1, F1_c)

print(f"{'class':>11} {'images':>7} {'TP':>5} {'FP':>5} {'FN':>5} {'precision':>10} "
      f"{'recall':>7} {'F1':>6}")
for c in range(K):
    print(f"{CLASSES[c]:>11} {C[c].sum():>7} {TP[c]:>5.0f} {FP[c]:>5.0f} {FN[c]:>5.0f} "
          f"{P_c[c]:>10.3f} {R_c[c]:>7.3f} {F1_c[c]:>6.3f}")
macro = metrics.precision_recall_f1(y, y_hat, K)
print(f"{'macro':>11} {'':>7} {'':>5} {'':>5} {'':>5} {macro[0]:>10.3f} {macro[1]:>7.3f} "
      f"{macro[2]:>6.3f}")
micro_precision = TP.sum() / (TP.sum() + FP.sum())
print(f"micro precision = micro recall = accuracy: {micro_precision:.4f} = {acc:.4f}")

# %% [markdown]
# ## 12.4 ROC curves and the AUC
#
# Precision and recall judge the *decisions* $\hat y$. The scores behind them carry more: for
# class $c$, rank the test images by $p_{n,c}$ and call "positive" every image whose score is at
# least a threshold $\tau$. Lowering $\tau$ from $+\infty$ to $-\infty$ walks from "nothing is
# $c$" to "everything is $c$"; at each step
#
# $$\text{TPR}(\tau) = \frac{\#\{\text{images of } c \text{ with } p_{n,c} \ge \tau\}}{\#\{\text{images of } c\}},\qquad
# \text{FPR}(\tau) = \frac{\#\{\text{other images with } p_{n,c} \ge \tau\}}{\#\{\text{other images}\}} .$$
#
# The **ROC curve** joins the points (FPR, TPR) from (0, 0) to (1, 1) — one-vs-rest, one curve
# per class. Its area, by the **trapezoid rule** over consecutive points,
#
# $$\text{AUC} = \sum_k (\text{FPR}_{k+1} - \text{FPR}_k)\,\frac{\text{TPR}_k + \text{TPR}_{k+1}}{2},$$
#
# equals the probability that a random image of $c$ scores higher than a random other image,
# with **ties counted as one half**: $\text{AUC} = P(s^+ > s^-) + \tfrac12 P(s^+ = s^-)$. Ties
# are where the trapezoid matters. When a positive and a negative share a score, one threshold
# admits both at once: the curve moves diagonally, up and right together, and the trapezoid
# under that diagonal step counts exactly half of each such pair. (Sorting the tied samples in
# some order and drawing a staircase instead would count a pair as 1 or 0 depending on that
# arbitrary order.) `metrics.roc_curve` therefore makes one point per *distinct* score. A tiny
# example with ties:

# %%
s_tiny = np.array([0.9, 0.7, 0.7, 0.7, 0.4, 0.2])
t_tiny = np.array([1, 1, 0, 0, 1, 0])
fpr, tpr, thr = metrics.roc_curve(t_tiny, s_tiny)
print("thresholds", thr, "\nFPR", fpr, "\nTPR", tpr)
pos, neg = s_tiny[t_tiny == 1], s_tiny[t_tiny == 0]
pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
print(f"AUC by the trapezoid rule {metrics.auc(fpr, tpr):.4f}; "
      f"by counting pairs (ties 1/2) {pairs:.4f}")
assert abs(metrics.auc(fpr, tpr) - pairs) < 1e-12

# %% [markdown]
# The threshold 0.7 admits one positive and two negatives at once: the curve goes from
# (0, 1/3) to (2/3, 2/3) in one diagonal step. Now the model: one curve per class, and the
# macro AUC (the mean of the ten).

# %%
auc_c = metrics.roc_auc_ovr(y, P, K, average=None)
fig, ax = plt.subplots(figsize=(6.5, 5.5))
for c in range(K):
    fpr, tpr, _ = metrics.roc_curve(y == c, P[:, c])
    ax.plot(fpr, tpr, lw=1, label=f"{CLASSES[c]} (AUC {auc_c[c]:.3f})")
ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance (AUC 0.5)")
ax.set(xlabel="false positive rate (share of other images called c)",
       ylabel="true positive rate (share of class c found)",
       title=f"one-vs-rest ROC, macro AUC {np.mean(auc_c):.3f}")
ax.legend(fontsize=7, loc="lower right")
plt.tight_layout(); plt.show()
print("per-class AUC:", {c: round(float(a), 3) for c, a in zip(CLASSES, auc_c)})

# %% [markdown]
# ## 12.5 What these numbers hide: an imbalanced test set
#
# The test set above is balanced (about 10 % per class). Real data rarely is. Build an
# imbalanced one from it: keep every image of one class — airplane — and only 10 % of every
# other class, so airplanes are about half the set. Then compare three things: the trained
# model, and a "model" that answers *airplane* for everything.

# %%
rng = np.random.default_rng(SEED)
MAJOR = CLASSES.index("airplane")
keep = (y == MAJOR) | (rng.random(len(y)) < 0.1)
y_imb, P_imb, y_hat_imb = y[keep], P[keep], y_hat[keep]
always = np.full_like(y_imb, MAJOR)
print(f"imbalanced subset: {keep.sum()} images, {np.mean(y_imb == MAJOR):.0%} airplanes")


def summary_row(name, y_true, y_pred, probs=None):
    p, r, f = metrics.precision_recall_f1(y_true, y_pred, K)
    auc_txt = (f"{metrics.roc_auc_ovr(y_true, probs, K):>9.3f}" if probs is not None
               else f"{'—':>9}")
    print(f"{name:>34} {metrics.accuracy(y_true, y_pred):>9.3f} {p:>10.3f} {r:>7.3f} "
          f"{f:>9.3f} {auc_txt}")


print(f"{'':>34} {'accuracy':>9} {'macro P':>10} {'macro R':>7} {'macro F1':>9} "
      f"{'macro AUC':>9}")
summary_row("model, balanced test set", y, y_hat, P)
summary_row("model, imbalanced subset", y_imb, y_hat_imb, P_imb)
summary_row("'always airplane', balanced", y, np.full_like(y, MAJOR))
summary_row("'always airplane', imbalanced", y_imb, always)

p_bal, r_bal, _ = metrics.precision_recall_f1(y, y_hat, K, average=None)
p_imb, r_imb, _ = metrics.precision_recall_f1(y_imb, y_hat_imb, K, average=None)
print(f"\nairplane precision: balanced {p_bal[MAJOR]:.3f} -> imbalanced {p_imb[MAJOR]:.3f};"
      f" recall {r_bal[MAJOR]:.3f} -> {r_imb[MAJOR]:.3f}")
print("mean precision of the other classes: balanced",
      f"{np.delete(p_bal, MAJOR).mean():.3f} -> imbalanced {np.delete(p_imb, MAJOR).mean():.3f}")

# %% [markdown]
# What the table shows:
#
# * **Accuracy rewards the majority.** Answering "airplane" every time scores about 0.1 on the
#   balanced set and about half on the imbalanced one — without looking at a single pixel. On an
#   imbalanced set an accuracy means little until it is compared with the majority share.
#   Macro F1 does not fall for it: the constant answer has $F1 = 0$ on nine classes.
# * **Recall and AUC do not depend on how common a class is**: they only look *within* the
#   positives (recall, TPR) or within the negatives (FPR). The model's per-class recall and its
#   AUCs stay about the same on the subset (up to the noise of fewer images).
# * **Precision does.** $P_c = TP_c/(TP_c+FP_c)$ mixes the positives with the negatives: when
#   airplanes become ten times more common relative to every other class, the airplanes
#   mistaken for class $c$ become ten times more common relative to the true $c$s, so the other
#   classes' precision drops while the airplane precision rises — the same model, the same
#   decision for every image.
#
# So report per-class numbers, a macro average, and the class shares beside any accuracy.

# %% [markdown]
# ## 12.6 Calibration: does 90 % sure mean 90 % right?
#
# A classifier's softmax outputs are often read as probabilities. They are only honest if,
# among the predictions made with confidence $\hat p_n = \max_k p_{n,k}$ near 0.9, about 90 %
# are right. Sort the predictions into $M$ equal-width bins by confidence,
# $B_m = \{n : \hat p_n \in (\tfrac{m-1}{M}, \tfrac{m}{M}]\}$, and compare in each bin
#
# $$\text{acc}(B_m) = \frac{1}{|B_m|}\sum_{n\in B_m}[\hat y_n = y_n] \quad\text{with}\quad
# \text{conf}(B_m) = \frac{1}{|B_m|}\sum_{n\in B_m}\hat p_n .$$
#
# The **reliability diagram** draws $\text{acc}(B_m)$ against the bins; a calibrated model
# sits on the diagonal. The **expected calibration error** weighs each bin's gap by its share
# of the samples (Guo et al., *On Calibration of Modern Neural Networks*, 2017):
#
# $$\text{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{N}\,\bigl|\text{acc}(B_m) - \text{conf}(B_m)\bigr| .$$
#
# Bars below the diagonal mean **over-confidence** (it is right less often than it claims),
# above it under-confidence. `metrics.reliability_bins` returns the bins (empty bins are left
# out of the sum; a confidence exactly on an edge $m/M$ counts in the lower bin) and
# `metrics.expected_calibration_error` the sum; `viz.plot_reliability_diagram` draws them.

# %%
N_BINS = 10
bins = metrics.reliability_bins(y, P, N_BINS)
ece = metrics.expected_calibration_error(y, P, N_BINS)
print(f"{'bin':>13} {'images':>7} {'mean confidence':>16} {'accuracy':>9}")
for m in range(N_BINS):
    if bins["counts"][m]:
        print(f"({bins['edges'][m]:.1f}, {bins['edges'][m + 1]:.1f}] {bins['counts'][m]:>7} "
              f"{bins['confidence'][m]:>16.3f} {bins['accuracy'][m]:>9.3f}")
print(f"ECE = {ece:.4f}; mean confidence {P.max(1).mean():.3f} vs accuracy {acc:.3f}")

# %% [markdown]
# **Temperature scaling** (Guo et al.) is the simplest fix: divide every logit by one number
# $T > 0$ before the softmax, $p = \operatorname{softmax}(z/T)$. $T > 1$ softens over-confident
# outputs, $T < 1$ sharpens, and since dividing by $T$ keeps the order of the logits the
# predictions — and the accuracy — do not change. $T$ must be chosen on data the final numbers
# are not measured on: we split the test set in two halves, pick $T$ on the first by the
# negative log-likelihood, and measure the ECE on the second. ($\log p$ recovers the logits up
# to a constant per row, which the softmax ignores.)

# %%
half = np.random.default_rng(SEED + 1).permutation(len(y))
fit_idx, eval_idx = half[: len(y) // 2], half[len(y) // 2:]
logits = np.log(np.clip(P, 1e-30, None))                 # logits up to a per-row constant


def softmax_T(z, T):
    z = z / T
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def nll(z, labels, T):
    return -np.log(softmax_T(z, T)[np.arange(len(labels)), labels] + 1e-30).mean()


temperatures = np.exp(np.linspace(np.log(0.25), np.log(8), 61))
losses = [nll(logits[fit_idx], y[fit_idx], T) for T in temperatures]
T_best = float(temperatures[int(np.argmin(losses))])
P_eval, P_scaled = P[eval_idx], softmax_T(logits[eval_idx], T_best)
ece_before = metrics.expected_calibration_error(y[eval_idx], P_eval, N_BINS)
ece_after = metrics.expected_calibration_error(y[eval_idx], P_scaled, N_BINS)
print(f"temperature chosen on the first half: T = {T_best:.2f}")
print(f"second half: ECE {ece_before:.4f} -> {ece_after:.4f}; accuracy "
      f"{(P_eval.argmax(1) == y[eval_idx]).mean():.3f} -> "
      f"{(P_scaled.argmax(1) == y[eval_idx]).mean():.3f} (unchanged by construction)")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
viz.plot_reliability_diagram(metrics.reliability_bins(y[eval_idx], P_eval, N_BINS), axes[0],
                             label="fused model")
axes[0].set_title(f"before: ECE {ece_before:.3f} (second half of the test set)")
viz.plot_reliability_diagram(metrics.reliability_bins(y[eval_idx], P_scaled, N_BINS), axes[1],
                             label=f"T = {T_best:.2f}", color="C2")
axes[1].set_title(f"after temperature scaling: ECE {ece_after:.3f}")
plt.tight_layout(); plt.show()

# %% [markdown]
# Which way a model errs is a measurement, not an assumption: long-trained large networks,
# Guo et al.'s subject, tend to be over-confident ($T > 1$), a small network trained for a few
# epochs may be close to calibrated or under-confident ($T < 1$) — read your own diagram and
# the chosen $T$. If the model is already close to the diagonal, temperature scaling has little
# to fix, and on a few hundred images the ECE itself moves by a few hundredths from one half of
# the test set to the other. Calibration matters wherever a probability is *used* —
# the Bayes fusion of chapter 8 multiplies the image model's probabilities by the caption's
# likelihood, and is only as right as those probabilities.
#
# ## Summary
#
# * Accuracy $= \operatorname{tr}(C)/N$; the confusion matrix $C_{ij}$ (true $i$, predicted
#   $j$) keeps the classes apart.
# * $TP_c = C_{cc}$, $FP_c$ = column $c$ off the diagonal, $FN_c$ = row $c$ off the diagonal;
#   $P_c = TP/(TP+FP)$, $R_c = TP/(TP+FN)$, $F1_c = 2TP/(2TP+FP+FN)$; macro = mean over
#   classes; micro = accuracy for single-label problems.
# * ROC: TPR against FPR as the threshold falls; AUC by the trapezoid rule
#   $= P(s^+ > s^-) + \frac12 P(s^+ = s^-)$ — one point per distinct score makes ties count
#   one half.
# * On imbalanced data accuracy flatters the majority; recall and AUC do not depend on the
#   class shares, precision does. Report per-class and macro numbers with the shares.
# * Calibration: reliability diagram and ECE $= \sum_m \frac{|B_m|}{N}|\text{acc}_m -
#   \text{conf}_m|$; temperature scaling corrects a systematic over- or under-confidence
#   without changing a single prediction.
#
# ## Exercises
#
# 1. Show that $F1_c = 2TP_c/(2TP_c + FP_c + FN_c)$ follows from the harmonic mean, and that
#    micro precision equals accuracy for single-label classification.
# 2. The **weighted** average weighs each class's F1 by its share of the images. Compute it on
#    the imbalanced subset and explain why it sits between accuracy and macro F1.
# 3. Round the probabilities to one decimal (`np.round(P, 1)`) and recompute the AUCs. Which
#    change, and why does the trapezoid rule still give the pair-counting answer?
# 4. Draw the **precision–recall** curve of the airplane class on the balanced set and on the
#    imbalanced subset. Which curve moves, and why does the ROC curve not?
# 5. Compute the ECE with 5, 15 and 30 bins. Why does it grow with the number of bins on a
#    small test set even for a perfectly calibrated model? (Hint: simulate one.)
# 6. Evaluate the image-only and the text-only model of chapter 8 the same way. Which one is
#    better calibrated, and does the text-only model's reliability diagram show the 0.71 of a
#    caption that names a class?

# %%
# The chapter's own results, in quick mode too
assert np.allclose(auc_c, [metrics.roc_auc_score(y == c, P[:, c]) for c in range(K)])
assert acc > 0.2 and np.mean(auc_c) > 0.75
assert metrics.accuracy(y_imb, always) > 0.35 > metrics.f1_score(y_imb, always, K)
assert 0 <= ece <= 1 and ece_after <= ece_before + 0.02
print("chapter 12: all checks passed")
