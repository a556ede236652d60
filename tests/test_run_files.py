"""The run files every `train` experiment writes: the times in metrics.json and the three files."""
import json
import os

import numpy as np

from minimm.experiments import cifar10
from minimm.train import History


def test_epoch_seconds_sums_and_averages_the_history():
    h = History({"loss": [1.0, 0.5, 0.25], "epoch_time": [10.0, 12.0, 14.0],
                 "train_time": [8.0, 9.0, 13.0]})
    got = cifar10.epoch_seconds(h)
    assert got == {"seconds": 36.0, "seconds_per_epoch": 12.0, "train_seconds_per_epoch": 10.0}


def test_epoch_seconds_of_an_empty_history_has_no_means():
    got = cifar10.epoch_seconds(History())
    assert got == {"seconds": 0.0, "seconds_per_epoch": None, "train_seconds_per_epoch": None}


def test_write_run_writes_history_metrics_and_the_given_plots(tmp_path):
    h = History({"loss": [1.0, 0.5], "epoch_time": [1.0, 2.0], "train_time": [0.5, 1.5]})
    metrics = {"model": "toy", "test_accuracy": 0.5, **cifar10.epoch_seconds(h)}
    drawn = []
    cifar10.write_run(h, metrics, str(tmp_path), plots=lambda *a: drawn.append(a))
    assert sorted(os.listdir(tmp_path)) == ["history.json", "metrics.json"]
    assert json.loads((tmp_path / "metrics.json").read_text())["seconds_per_epoch"] == 1.5
    saved = json.loads((tmp_path / "history.json").read_text())
    assert np.allclose(saved["loss"], [1.0, 0.5])
    assert len(drawn) == 1 and drawn[0][1] is metrics and drawn[0][2] == str(tmp_path)
