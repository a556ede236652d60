"""Evaluation metrics of the article's §9.4: accuracy, precision / recall / F1, the confusion
matrix, the ROC curve and the area under it. Plain NumPy on labels and scores (CuPy arrays
and Tensors are brought to the host first); nothing here is differentiable.

Conventions follow scikit-learn, so numbers can be compared with it:

* ``confusion_matrix[i, j]`` counts samples of **true** class i **predicted** as j;
* precision_c = TP_c / (TP_c + FP_c), recall_c = TP_c / (TP_c + FN_c),
  F1_c = 2 P_c R_c / (P_c + R_c); a 0/0 is taken as 0 (sklearn's ``zero_division=0``);
  ``average="macro"`` is the unweighted mean over the classes;
* ``roc_curve`` sweeps the threshold down through every distinct score: at threshold τ a
  sample is predicted positive when score ≥ τ; the first point is (0, 0) at τ = +∞.
  Unlike sklearn's default it keeps every point (``drop_intermediate=False``); the dropped
  points are collinear, so the area is the same;
* AUC is the trapezoid rule, written out (``np.trapz`` was renamed ``np.trapezoid`` in
  NumPy 2, so neither is portable across 1.x and 2.x);
* calibration (a step beyond the article): the confidence of a prediction is its largest
  softmax probability; ``reliability_bins`` sorts the predictions into equal-width confidence
  bins and ``expected_calibration_error`` is the count-weighted gap between each bin's accuracy
  and its mean confidence (Guo et al., "On Calibration of Modern Neural Networks", 2017).
"""
import numpy as np

from . import backend


def _host(a, name, op):
    a = backend.unwrap(a)
    a = np.asarray(backend.to_numpy(a) if hasattr(a, "shape") else a)
    if a.ndim != 1:
        raise ValueError(f"{op}: {name} must be 1-D, got shape {a.shape}")
    return a


def _labels(y, name, op, num_classes=None):
    y = _host(y, name, op)
    if y.size and y.dtype.kind not in "iub":
        raise TypeError(f"{op}: {name} must hold integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{op}: {name} must lie in 0..{num_classes - 1}, got min {y.min()}, "
                         f"max {y.max()}")
    return y


def _pair(y_true, y_pred, op, num_classes=None):
    y_true = _labels(y_true, "y_true", op, num_classes)
    y_pred = _labels(y_pred, "y_pred", op, num_classes)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{op}: y_true and y_pred must have the same length, got "
                         f"{y_true.shape[0]} and {y_pred.shape[0]}")
    return y_true, y_pred


def accuracy(y_true, y_pred):
    """The fraction of predictions equal to the labels (a float; nan for no samples)."""
    y_true, y_pred = _pair(y_true, y_pred, "accuracy")
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def confusion_matrix(y_true, y_pred, num_classes):
    """C (num_classes, num_classes) int64, C[i, j] = #{n : y_true[n] = i and y_pred[n] = j}."""
    y_true, y_pred = _pair(y_true, y_pred, "confusion_matrix", num_classes)
    k = int(num_classes)
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.int64)


def _safe_div(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def precision_recall_f1(y_true, y_pred, num_classes, average="macro"):
    """Per-class precision, recall and F1 from the confusion matrix C:

        TP_c = C[c, c],  FP_c = Σ_i C[i, c] − TP_c,  FN_c = Σ_j C[c, j] − TP_c
        P_c = TP_c / (TP_c + FP_c),  R_c = TP_c / (TP_c + FN_c),  F1_c = 2 P_c R_c / (P_c + R_c)

    (0/0 -> 0). ``average="macro"``: (precision, recall, f1) as floats, each the unweighted
    mean over all ``num_classes`` classes; ``average=None``: three float64 arrays (num_classes,).
    """
    if average not in ("macro", None):
        raise ValueError(f"precision_recall_f1: average must be 'macro' or None, got {average!r}")
    C = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(C)
    precision = _safe_div(tp, C.sum(axis=0))          # column sums: TP + FP
    recall = _safe_div(tp, C.sum(axis=1))             # row sums: TP + FN
    f1 = _safe_div(2 * precision * recall, precision + recall)
    if average is None:
        return precision, recall, f1
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def f1_score(y_true, y_pred, num_classes, average="macro"):
    """The F1 part of :func:`precision_recall_f1`."""
    return precision_recall_f1(y_true, y_pred, num_classes, average)[2]


def roc_curve(y_true, scores):
    """The ROC curve of a binary problem: (fpr, tpr, thresholds), float64 arrays.

    y_true: 0/1 (or bool) labels; scores: higher means "more positive". For every distinct
    score τ, from the highest down, a sample is called positive when its score ≥ τ:

        tpr(τ) = #{positives with score ≥ τ} / #positives
        fpr(τ) = #{negatives with score ≥ τ} / #negatives

    The curve starts at (0, 0) with threshold +∞ and ends at (1, 1). Needs at least one
    positive and one negative.
    """
    op = "roc_curve"
    y = _host(y_true, "y_true", op)
    s = _host(scores, "scores", op).astype(np.float64)
    if y.shape != s.shape:
        raise ValueError(f"{op}: y_true and scores must have the same length, got "
                         f"{y.shape[0]} and {s.shape[0]}")
    if y.dtype.kind not in "iub" or (y.size and not np.isin(y, (0, 1)).all()):
        raise ValueError(f"{op}: y_true must be binary (0/1 or bool), got values "
                         f"{np.unique(y)[:5].tolist()}")
    if not np.isfinite(s).all():
        raise ValueError(f"{op}: scores must be finite")
    y = y.astype(np.int64)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"{op}: need both classes in y_true, got {n_pos} positive and "
                         f"{n_neg} negative samples")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # the last index of each run of equal scores: where the threshold stops
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thresholds = np.r_[np.inf, s[last]]
    return fpr, tpr, thresholds


def auc(x, y):
    """The area under the curve y(x) by the trapezoid rule, Σ (x_{k+1} − x_k)(y_k + y_{k+1})/2.

    x must be monotonic (increasing or decreasing; a decreasing x gives the same positive
    area, as sklearn's ``auc``).
    """
    x = _host(x, "x", "auc").astype(np.float64)
    y = _host(y, "y", "auc").astype(np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"auc: x and y need the same length >= 2, got {x.shape[0]} and "
                         f"{y.shape[0]}")
    dx = np.diff(x)
    if (dx < 0).any() and (dx > 0).any():
        raise ValueError("auc: x is neither increasing nor decreasing")
    area = float(np.sum(dx * (y[1:] + y[:-1]) / 2.0))
    return -area if (dx <= 0).all() else area


def roc_auc_score(y_true, scores):
    """Area under the ROC curve of a binary problem (= P(score of a random positive >
    score of a random negative), ties counting 1/2)."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    return auc(fpr, tpr)


def roc_auc_ovr(y_true, probabilities, num_classes=None, average="macro"):
    """One-vs-rest AUC of a multi-class classifier: for each class c, the ROC AUC of
    "is class c" scored by probabilities[:, c]; ``average="macro"`` their unweighted mean
    (a float), ``None`` the per-class array. A class absent from y_true (or the only one
    present) has no ROC curve: it is nan per class and left out of the mean.
    """
    op = "roc_auc_ovr"
    P = backend.unwrap(probabilities)
    P = np.asarray(backend.to_numpy(P) if hasattr(P, "shape") else P, dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(f"{op}: probabilities must be (N, num_classes), got shape {P.shape}")
    k = P.shape[1] if num_classes is None else int(num_classes)
    if P.shape[1] != k:
        raise ValueError(f"{op}: probabilities have {P.shape[1]} columns, expected {k}")
    y = _labels(y_true, "y_true", op, k)
    if y.shape[0] != P.shape[0]:
        raise ValueError(f"{op}: {y.shape[0]} labels but {P.shape[0]} rows of probabilities")
    per_class = np.full(k, np.nan)
    for c in range(k):                       # a loop over classes, not samples
        positive = y == c
        if positive.any() and not positive.all():
            per_class[c] = roc_auc_score(positive, P[:, c])
    if average is None:
        return per_class
    if average != "macro":
        raise ValueError(f"{op}: average must be 'macro' or None, got {average!r}")
    valid = per_class[~np.isnan(per_class)]
    return float(valid.mean()) if valid.size else float("nan")


def _probabilities(probabilities, op):
    P = backend.unwrap(probabilities)
    P = np.asarray(backend.to_numpy(P) if hasattr(P, "shape") else P, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 2:
        raise ValueError(f"{op}: probabilities must be (N, num_classes >= 2), got shape "
                         f"{P.shape}")
    if not np.isfinite(P).all() or (P < 0).any() or (P > 1).any():
        raise ValueError(f"{op}: probabilities must be finite and lie in [0, 1] (softmax "
                         f"outputs, not logits)")
    return P


def reliability_bins(y_true, probabilities, n_bins=10):
    """The data of a reliability diagram: predictions grouped by their confidence.

    For each sample the prediction is ŷ = argmax_k p_k and its confidence p̂ = max_k p_k. The
    interval [0, 1] is cut into ``n_bins`` equal bins B_m = (e_m, e_{m+1}] with edges
    e_m = m / n_bins (each the float nearest m / n_bins); the first bin also holds p̂ = 0. A confidence exactly on an
    edge e_m therefore falls in the bin **below** it (right-closed bins, as in Guo et al.).
    Returns a dict of NumPy arrays:

        edges       (n_bins + 1,)  the bin edges e_m
        counts      (n_bins,)      n_m = |B_m|, int64
        confidence  (n_bins,)      conf(B_m) = mean of p̂ over the bin   (nan where n_m = 0)
        accuracy    (n_bins,)      acc(B_m)  = mean of [ŷ = y] over it  (nan where n_m = 0)

    A perfectly calibrated model has acc(B_m) = conf(B_m) in every bin: of the predictions
    made with confidence 0.8, 80 % are right.
    """
    op = "reliability_bins"
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"{op}: n_bins must be a positive integer, got {n_bins!r}")
    P = _probabilities(probabilities, op)
    y = _labels(y_true, "y_true", op, P.shape[1])
    if y.shape[0] != P.shape[0]:
        raise ValueError(f"{op}: {y.shape[0]} labels but {P.shape[0]} rows of probabilities")
    confidence = P.max(axis=1)
    correct = (P.argmax(axis=1) == y).astype(np.float64)
    edges = np.arange(int(n_bins) + 1) / n_bins     # m / M correctly rounded (linspace is not)
    # searchsorted(side="left") - 1 puts e_m < p̂ <= e_{m+1} in bin m: right-closed bins
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins).astype(np.int64)
    sum_conf = np.bincount(index, weights=confidence, minlength=n_bins)
    sum_correct = np.bincount(index, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, sum_conf / np.maximum(counts, 1), np.nan)
        mean_acc = np.where(counts > 0, sum_correct / np.maximum(counts, 1), np.nan)
    return {"edges": edges, "counts": counts, "confidence": mean_conf, "accuracy": mean_acc}


def expected_calibration_error(y_true, probabilities, n_bins=10):
    """ECE = Σ_m (n_m / N) · |acc(B_m) − conf(B_m)| over the non-empty bins of
    :func:`reliability_bins` (a float in [0, 1]; 0 for a perfectly calibrated model)."""
    bins = reliability_bins(y_true, probabilities, n_bins)
    n = bins["counts"].sum()
    if n == 0:
        raise ValueError("expected_calibration_error: no samples")
    filled = bins["counts"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["counts"][filled] / n * gaps))


def classification_summary(y_true, probabilities, num_classes=None):
    """Every metric above for a multi-class classifier's softmax outputs, as plain Python
    numbers and lists (JSON-ready): accuracy, macro precision / recall / F1, the per-class
    ones, the one-vs-rest macro AUC and the confusion matrix. Predictions are the argmax."""
    P = backend.unwrap(probabilities)
    P = np.asarray(backend.to_numpy(P) if hasattr(P, "shape") else P)
    k = P.shape[1] if num_classes is None else int(num_classes)
    y_pred = P.argmax(axis=1)
    precision, recall, f1 = precision_recall_f1(y_true, y_pred, k, average=None)
    return {"accuracy": accuracy(y_true, y_pred),
            "macro_precision": float(precision.mean()), "macro_recall": float(recall.mean()),
            "macro_f1": float(f1.mean()), "macro_auc": roc_auc_ovr(y_true, P, k),
            "per_class_precision": precision.tolist(), "per_class_recall": recall.tolist(),
            "per_class_f1": f1.tolist(),
            "confusion_matrix": confusion_matrix(y_true, y_pred, k).tolist()}


__all__ = ["accuracy", "confusion_matrix", "precision_recall_f1", "f1_score", "roc_curve",
           "auc", "roc_auc_score", "roc_auc_ovr", "classification_summary", "reliability_bins",
           "expected_calibration_error"]
