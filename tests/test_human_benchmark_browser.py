"""The human-benchmark answer page in a real headless browser: answer every item, download, score.

Drives Debian's ``chromium`` through Playwright (``executable_path`` = the system browser, so Playwright's
own browser download is not needed). Skipped, with the reason, where Playwright or a Chromium binary is
missing. CI installs them with::

    apt-get install -y chromium
    pip install playwright
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from overinterp_fixtures import write_sis_file
from pathologies.overinterp.human_benchmark import export, main

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"no Chromium binary on PATH ({', '.join(BROWSERS)}); install Debian's `chromium`")


def test_participant_answers_every_item_downloads_json_and_it_scores(tmp_path, quadrant_dataset, capsys):
    executable = _browser()
    from playwright.sync_api import sync_playwright

    rows = np.arange(10, 30)
    order = np.stack([np.random.default_rng(i).permutation(64) for i in range(len(rows))])
    sis = write_sis_file(tmp_path / "sis.h5", quadrant_dataset, "test", rows, order)
    export(sis, [0.1, 0.5], 3, 0, tmp_path / "index.html", tmp_path / "key.csv")
    key = pd.read_csv(tmp_path / "key.csv")
    truth = dict(zip(key["item"], key["class_name"], strict=True))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(accept_downloads=True)
        page.goto((tmp_path / "index.html").as_uri())
        assert page.inner_text("#unanswered") == str(len(key))
        page.fill("#participant", "tester")
        items = page.eval_on_selector_all("#answers select", "els => els.map(e => e.name)")
        assert sorted(items) == sorted(key["item"])
        for i, item in enumerate(items):  # a participant: right on every other image
            answer = truth[item] if i % 2 == 0 else next(c for c in set(truth.values()) if c != truth[item])
            page.select_option(f'select[name="{item}"]', answer)
        assert page.inner_text("#unanswered") == "0"
        with page.expect_download() as download:
            page.click("#download")
        download.value.save_as(tmp_path / "answers.json")
        browser.close()
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert answers["participant"] == "tester" and answers["unanswered"] == [] and len(answers["answers"]) == len(key)
    capsys.readouterr()
    assert main(["--score", str(tmp_path / "answers.json"), "--key-out", str(tmp_path / "key.csv"),
                 "--table-out", str(tmp_path / "s6.csv")]) == 0
    right = sum(answers["answers"][item] == truth[item] for item in truth)
    table = pd.read_csv(tmp_path / "s6.csv")
    assert table["accuracy_mean"].mean() == pytest.approx(100 * right / len(key))
