"""minimm.metrics against hand-computed examples and against scikit-learn's definitions,
written out here as plain loops (sklearn itself is not a dependency).

Inputs are put on the test's device (NumPy or CuPy arrays, or Tensors): the metrics bring
them to the host themselves.
"""
import numpy as np
import pytest

import minimm as mm
from minimm import metrics


# -- oracles: the definitions, one sample or one pair at a time --------------------------------
def confusion_oracle(y_true, y_pred, k):
    C = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y_true.tolist(), y_pred.tolist()):
        C[t, p] += 1
    return C


def prf_oracle(y_true, y_pred, k):
    """sklearn's precision_recall_fscore_support(average=None, zero_division=0)."""
    P, R, F1 = [], [], []
    for c in range(k):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        P.append(prec)
        R.append(rec)
        F1.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return np.array(P), np.array(R), np.array(F1)


def auc_oracle(y, s):
    """ROC AUC = P(score of a random positive > score of a random negative), ties 1/2."""
    pos = [a for a, t in zip(s, y) if t == 1]
    neg = [a for a, t in zip(s, y) if t == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def on(device, a):
    return mm.tensor(np.asarray(a), device=device).data


# -- accuracy and the confusion matrix ---------------------------------------------------------
def test_accuracy_hand_example(device):
    assert metrics.accuracy(on(device, [0, 1, 2, 2]), on(device, [0, 2, 2, 2])) == 0.75
    t = mm.tensor(np.array([1, 1, 0]), device=device)
    assert metrics.accuracy(t, np.array([1, 0, 0])) == pytest.approx(2 / 3)


def test_confusion_matrix_hand_example(device):
    y_true = on(device, [0, 0, 1, 1, 2, 2])
    y_pred = on(device, [0, 1, 1, 1, 0, 2])
    C = metrics.confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(C, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert C.dtype == np.int64
    # a class that never occurs keeps its empty row and column
    np.testing.assert_array_equal(metrics.confusion_matrix([0, 1], [1, 1], 4),
                                  [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_confusion_matrix_matches_loop(device, rng):
    y_true, y_pred = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    C = metrics.confusion_matrix(on(device, y_true), on(device, y_pred), 7)
    np.testing.assert_array_equal(C, confusion_oracle(y_true, y_pred, 7))
    assert C.sum() == 300 and np.trace(C) == (y_true == y_pred).sum()


# -- precision, recall, F1 ---------------------------------------------------------------------
def test_precision_recall_f1_hand_example(device):
    # C = [[1,1,0],[0,2,0],[1,0,1]]: column sums 2,3,1; row sums 2,2,2
    y_true = on(device, [0, 0, 1, 1, 2, 2])
    y_pred = on(device, [0, 1, 1, 1, 0, 2])
    P, R, F1 = metrics.precision_recall_f1(y_true, y_pred, 3, average=None)
    np.testing.assert_allclose(P, [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(R, [1 / 2, 1.0, 1 / 2])
    np.testing.assert_allclose(F1, [1 / 2, 0.8, 2 / 3])
    p, r, f = metrics.precision_recall_f1(y_true, y_pred, 3)
    assert (p, r) == pytest.approx((13 / 18, 2 / 3))
    assert f == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert metrics.f1_score(y_true, y_pred, 3) == pytest.approx(f)


def test_precision_recall_f1_zero_division_is_zero(device):
    # class 2 is never predicted and class 3 never occurs: 0/0 -> 0, as sklearn's zero_division=0
    P, R, F1 = metrics.precision_recall_f1(on(device, [0, 1, 2]), on(device, [0, 1, 1]), 4,
                                           average=None)
    np.testing.assert_allclose(P, [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(R, [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(F1, [1.0, 2 / 3, 0.0, 0.0])
    assert metrics.precision_recall_f1([0, 1, 2], [0, 1, 1], 4)[2] == pytest.approx(5 / 12)


def test_precision_recall_f1_matches_sklearn_definition(device, rng):
    y_true = rng.integers(0, 5, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 5, 200))
    got = metrics.precision_recall_f1(on(device, y_true), on(device, y_pred), 5, average=None)
    for g, want in zip(got, prf_oracle(y_true.tolist(), y_pred.tolist(), 5)):
        np.testing.assert_allclose(g, want, rtol=1e-12)
    macro = metrics.precision_recall_f1(y_true, y_pred, 5, average="macro")
    np.testing.assert_allclose(macro, [w.mean() for w in got], rtol=1e-12)


# -- ROC and AUC -------------------------------------------------------------------------------
def test_roc_curve_hand_example(device):
    # sklearn's documented example: y = [1, 1, 2, 2] with pos_label 2
    y = on(device, [0, 0, 1, 1])
    scores = on(device, np.array([0.1, 0.4, 0.35, 0.8]))
    fpr, tpr, thr = metrics.roc_curve(y, scores)
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    assert metrics.auc(fpr, tpr) == pytest.approx(0.75)
    assert metrics.roc_auc_score(y, scores) == pytest.approx(0.75)


def test_roc_curve_ties_share_one_threshold(device):
    # two samples at 0.5 (one of each class) move the curve diagonally in one step
    y = on(device, [1, 0, 1, 0])
    s = on(device, np.array([0.9, 0.5, 0.5, 0.1]))
    fpr, tpr, thr = metrics.roc_curve(y, s)
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.5, 0.1])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    assert metrics.auc(fpr, tpr) == pytest.approx(0.875)     # = 3.5 / 4 pairs, tie = 1/2


def test_roc_auc_matches_pairwise_definition(device, rng):
    y = rng.integers(0, 2, 120)
    s = np.round(rng.random(120) + 0.3 * y, 1)               # rounding makes many ties
    fpr, tpr, thr = metrics.roc_curve(on(device, y), on(device, s))
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all() and (np.diff(thr) < 0).all()
    # each point: the rates of "score >= threshold"
    for f, t, th in zip(fpr[1:], tpr[1:], thr[1:]):
        assert t == np.mean(s[y == 1] >= th) and f == np.mean(s[y == 0] >= th)
    assert metrics.roc_auc_score(y, s) == pytest.approx(auc_oracle(y.tolist(), s.tolist()),
                                                        abs=1e-12)


def test_auc_trapezoid(device):
    assert metrics.auc(on(device, [0.0, 1.0, 2.0]), on(device, [0.0, 1.0, 0.0])) == 1.0
    x = np.sort(np.random.default_rng(3).random(30))
    y = x ** 2
    want = sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(29))
    assert metrics.auc(x, y) == pytest.approx(want, rel=1e-12)
    assert metrics.auc(x[::-1], y[::-1]) == pytest.approx(want, rel=1e-12)   # decreasing x
    with pytest.raises(ValueError, match="neither increasing nor decreasing"):
        metrics.auc([0.0, 2.0, 1.0], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="same length >= 2"):
        metrics.auc([0.0], [1.0])


def test_roc_auc_ovr_macro(device, rng):
    y = rng.integers(0, 4, 80)
    logits = rng.standard_normal((80, 4)) + 1.5 * np.eye(4)[y]
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    per_class = metrics.roc_auc_ovr(on(device, y), on(device, P), 4, average=None)
    want = [auc_oracle((y == c).astype(int).tolist(), P[:, c].tolist()) for c in range(4)]
    np.testing.assert_allclose(per_class, want, rtol=1e-12)
    assert metrics.roc_auc_ovr(y, mm.tensor(P, device=device)) == pytest.approx(np.mean(want))
    # a class absent from y_true has no curve: nan, left out of the mean
    y3 = np.where(y == 3, 0, y)
    per_class = metrics.roc_auc_ovr(y3, P, average=None)
    assert np.isnan(per_class[3]) and not np.isnan(per_class[:3]).any()
    assert metrics.roc_auc_ovr(y3, P) == pytest.approx(np.mean(per_class[:3]))


def test_classification_summary(device, rng):
    y = rng.integers(0, 3, 50)
    P = rng.dirichlet(np.ones(3), size=50).astype(np.float32)
    s = metrics.classification_summary(on(device, y), on(device, P), 3)
    pred = P.argmax(axis=1)
    assert s["accuracy"] == metrics.accuracy(y, pred)
    assert s["macro_f1"] == pytest.approx(prf_oracle(y.tolist(), pred.tolist(), 3)[2].mean())
    assert s["macro_auc"] == pytest.approx(metrics.roc_auc_ovr(y, P))
    assert s["confusion_matrix"] == confusion_oracle(y, pred, 3).tolist()
    assert all(isinstance(v, (float, list)) for v in s.values())


# -- bad input ---------------------------------------------------------------------------------
def test_metric_errors(device):
    with pytest.raises(ValueError, match="confusion_matrix: y_true and y_pred must have the same "
                                         "length, got 3 and 2"):
        metrics.confusion_matrix(on(device, [0, 1, 2]), on(device, [0, 1]), 3)
    with pytest.raises(ValueError, match=r"confusion_matrix: y_pred must lie in 0\.\.2"):
        metrics.confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(TypeError, match="accuracy: y_true must hold integer class ids"):
        metrics.accuracy(np.array([0.5, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="precision_recall_f1: average must be 'macro' or None"):
        metrics.precision_recall_f1([0], [0], 2, average="micro")
    with pytest.raises(ValueError, match="roc_curve: y_true must be binary"):
        metrics.roc_curve(on(device, [0, 2]), on(device, np.array([0.1, 0.2])))
    with pytest.raises(ValueError, match="roc_curve: need both classes in y_true, got 2 "
                                         "positive and 0 negative"):
        metrics.roc_curve([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="roc_auc_ovr: probabilities must be"):
        metrics.roc_auc_ovr([0, 1], np.array([0.1, 0.9]))
