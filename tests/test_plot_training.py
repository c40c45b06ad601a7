"""Learning-curve figure: rows per model family, drawn from training logs the test writes."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from pathologies.errors import UserError
from pathologies.training.learning_curves import main, model_family, read_logs


def write_log(root, model, seed, accuracy):
    folder = root / model / f"seed{seed}"
    folder.mkdir(parents=True)
    epochs = np.arange(4)
    pd.DataFrame({"epoch": epochs, "train_loss": [np.nan, 1.0, 0.5, 0.2], "train_acc": [np.nan, 0.5, 0.7, 0.8],
                  "test_acc": accuracy * np.linspace(0.3, 1, 4)}).to_csv(folder / "train_log.csv", index=False)
    return folder / "train_log.csv"


def test_families_are_experiment_prefixes():
    assert model_family("digits.small_cnn.bs5") == "digits" and model_family("digits_cnn") == "digits_cnn"


def test_figure_has_a_row_per_family(tmp_path):
    logs = [write_log(tmp_path, "cnn", 0, 0.9), write_log(tmp_path, "cnn", 1, 0.8),
            write_log(tmp_path, "exp.a", 0, 0.5), write_log(tmp_path, "exp.b", 0, 0.4)]
    frame = read_logs(logs)
    assert sorted(frame["run"].unique()) == ["cnn/seed0", "cnn/seed1", "exp.a/seed0", "exp.b/seed0"]
    one_row, two_rows = tmp_path / "one.png", tmp_path / "two.png"
    main(["--logs", *map(str, logs[:2]), "--out", str(one_row)])
    main(["--logs", *map(str, logs), "--out", str(two_rows)])
    height_one, height_two = (matplotlib.image.imread(path).shape[0] for path in (one_row, two_rows))
    assert height_two > 1.7 * height_one


def test_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit):
        main(["--logs", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x.png")])
    with pytest.raises(UserError, match="does not exist"):
        read_logs([tmp_path / "nope.csv"])
