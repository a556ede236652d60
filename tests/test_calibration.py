"""Calibration metrics (minimm.metrics.reliability_bins, expected_calibration_error) against
cases computed by hand: empty bins, all-correct predictions, ties at bin edges."""
import numpy as np
import pytest

import minimm as mm
from minimm import metrics


def probs(confidences, predicted, k=4):
    """(N, k) probability rows whose max is ``confidences[n]`` at column ``predicted[n]``, the
    rest spread evenly over the other columns (so the max is unique for confidence > 1/k)."""
    c = np.asarray(confidences, dtype=np.float64)
    P = np.repeat(((1 - c) / (k - 1))[:, None], k, axis=1)
    P[np.arange(len(c)), predicted] = c
    return P


def test_hand_example_two_bins(device):
    # 4 bins of width 0.25. Samples: conf 0.9 right, 0.9 wrong, 0.6 right, 0.4 right (k = 3)
    P = probs([0.9, 0.9, 0.6, 0.4], [0, 1, 2, 0], k=3)
    y = np.array([0, 0, 2, 0])
    b = metrics.reliability_bins(mm.tensor(y, device=device), mm.tensor(P, device=device), 4)
    np.testing.assert_array_equal(b["counts"], [0, 1, 1, 2])
    np.testing.assert_allclose(b["edges"], [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(b["confidence"], [np.nan, 0.4, 0.6, 0.9])
    np.testing.assert_allclose(b["accuracy"], [np.nan, 1.0, 1.0, 0.5])
    # ECE = 1/4·|1 − 0.4| + 1/4·|1 − 0.6| + 2/4·|0.5 − 0.9| = 0.15 + 0.1 + 0.2
    assert metrics.expected_calibration_error(y, P, 4) == pytest.approx(0.45)


def test_empty_bins_are_nan_and_skipped():
    P = probs([0.95, 0.95], [1, 1])
    y = np.array([1, 0])
    b = metrics.reliability_bins(y, P, 10)
    assert b["counts"].sum() == 2 and b["counts"][9] == 2
    assert np.isnan(b["confidence"][:9]).all() and np.isnan(b["accuracy"][:9]).all()
    assert metrics.expected_calibration_error(y, P, 10) == pytest.approx(abs(0.5 - 0.95))


def test_all_correct_ece_is_one_minus_mean_confidence():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 50)
    pred = rng.integers(0, 4, 50)
    P = probs(conf, pred)
    # every bin has accuracy 1, so ECE = Σ n_m/N (1 − conf_m) = 1 − mean confidence
    assert metrics.expected_calibration_error(pred, P, 7) == pytest.approx(1 - conf.mean())
    b = metrics.reliability_bins(pred, P, 7)
    np.testing.assert_array_equal(b["accuracy"][b["counts"] > 0], 1.0)


def test_perfectly_calibrated_bins_give_zero():
    # bin (0.5, 0.75]: 4 samples at 0.75, 3 right; bin (0.75, 1]: 1 sample at 1.0, right
    P = probs([0.75, 0.75, 0.75, 0.75, 1.0], [0, 1, 2, 3, 0])
    y = np.array([0, 1, 2, 0, 0])
    assert metrics.expected_calibration_error(y, P, 4) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("n_bins", [1, 2, 3, 4, 5, 7, 10, 15, 20])
def test_ties_at_bin_edges_fall_in_the_lower_bin(n_bins):
    # a confidence exactly m / M belongs to bin m − 1 = (e_{m−1}, e_m]; 0 belongs to bin 0
    m = np.arange(1, n_bins + 1)
    conf = m / n_bins
    k = 2 * n_bins + 2                       # enough classes for every confidence to be the max
    keep = conf > 1 / k
    P = probs(conf[keep], np.zeros(keep.sum(), dtype=int), k=k)
    b = metrics.reliability_bins(np.zeros(keep.sum(), dtype=int), P, n_bins)
    expected = np.zeros(n_bins, dtype=np.int64)
    expected[(m - 1)[keep]] = 1
    np.testing.assert_array_equal(b["counts"], expected)


def test_confidence_zero_is_in_the_first_bin():
    # only possible for a degenerate all-zero row: still binned, not dropped
    P = np.zeros((1, 3))
    b = metrics.reliability_bins(np.array([0]), P, 5)
    np.testing.assert_array_equal(b["counts"], [1, 0, 0, 0, 0])


def test_ece_matches_a_plain_loop(rng):
    P = rng.dirichlet(np.ones(5) * 0.5, size=200)
    y = rng.integers(0, 5, 200)
    conf, pred = P.max(1), P.argmax(1)
    ece = 0.0
    for lo, hi in zip(np.arange(10) / 10, np.arange(1, 11) / 10):
        sel = [(lo < c <= hi) or (lo == 0 and c == 0) for c in conf]
        sel = np.array(sel)
        if sel.any():
            ece += sel.mean() * abs((pred[sel] == y[sel]).mean() - conf[sel].mean())
    assert metrics.expected_calibration_error(y, P, 10) == pytest.approx(ece, rel=1e-12)


@pytest.mark.parametrize("bad, match", [
    (dict(probabilities=np.full((2, 3), 2.0)), "lie in \\[0, 1\\]"),
    (dict(probabilities=np.ones(3)), "must be \\(N, num_classes"),
    (dict(n_bins=0), "n_bins must be a positive integer"),
    (dict(y_true=np.array([0, 5])), "must lie in 0..2"),
    (dict(y_true=np.array([0, 1, 2])), "3 labels but 2 rows"),
])
def test_bad_input_names_the_problem(bad, match):
    args = dict(y_true=np.array([0, 1]), probabilities=np.full((2, 3), 1 / 3), n_bins=10)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        metrics.reliability_bins(args["y_true"], args["probabilities"], args["n_bins"])
