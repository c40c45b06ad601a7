"""The measured scoring batch size: fastest size kept, cached, never changing results."""

from __future__ import annotations

import json

import pytest
import torch

from pathologies.errors import UserError
from pathologies.models.registry import build_model
from pathologies.sis import batch_size as tuning
from pathologies.sis.engine import Masking, Scorer


@pytest.fixture
def scorer() -> Scorer:
    torch.manual_seed(0)
    return Scorer(build_model("small_cnn", 3, in_channels=3, image_size=8))


def test_candidate_sample_masks_one_feature_per_candidate():
    images = torch.randn(3, 3, 4, 4)
    sample = tuning.candidate_sample(images, Masking(patch=2, value=0.5), 10)
    assert sample.shape == (10, 3, 4, 4)
    for i in range(10):
        changed = (sample[i] != images[i % 3]).any(dim=0)
        feature = i % 4
        expected = torch.zeros(4, 4, dtype=torch.bool)
        expected[2 * (feature // 2):2 * (feature // 2) + 2, 2 * (feature % 2):2 * (feature % 2) + 2] = True
        assert torch.equal(changed, expected)
        assert torch.all(sample[i][:, expected] == 0.5)


def test_measure_times_every_size_up_to_the_declared_one(scorer):
    sample = tuning.candidate_sample(torch.randn(4, 3, 8, 8), Masking(), 64)
    best, rates, invariant = tuning.measure(scorer.logits, sample, declared=48)
    assert sorted(rates) == [16, 32, 48] and all(rate > 0 for rate in rates.values())
    assert invariant  # CPU scores do not depend on the batch (batches of one are padded to two)
    assert best == max(rates, key=rates.get)


def test_scores_that_change_with_the_batch_keep_the_declared_size(scorer):
    sample = tuning.candidate_sample(torch.randn(4, 3, 8, 8), Masking(), 64)
    best, rates, invariant = tuning.measure(lambda x: scorer.logits(x) + 1e-3 * len(x), sample, declared=64)
    assert not invariant and best == 64 and sorted(rates) == [16, 32, 64]


def test_the_choice_is_cached_per_key(scorer, tmp_path):
    cache = tmp_path / "cache" / "batch.json"
    sample = tuning.candidate_sample(torch.randn(4, 3, 8, 8), Masking(), 32)
    lines = []
    first = tuning.tuned_batch_size(scorer.logits, sample, 32, cache, "key a", log=lines.append)
    assert first in (16, 32) and "candidates/s" in lines[-1]
    entry = json.loads(cache.read_text())["key a"]
    assert entry["batch_size"] == first and entry["declared"] == 32 and set(entry["candidates_per_s"]) == {"16", "32"}

    def must_not_run(x):
        raise AssertionError("the cached choice is measured again")

    assert tuning.tuned_batch_size(must_not_run, sample, 32, cache, "key a", log=lines.append) == first
    assert "cached" in lines[-1]
    # another declared size or another key measures again, and both entries stay
    assert tuning.tuned_batch_size(scorer.logits, sample, 16, cache, "key a", log=lines.append) == 16
    tuning.tuned_batch_size(scorer.logits, sample, 32, cache, "key b", log=lines.append)
    assert set(json.loads(cache.read_text())) == {"key a", "key b"}


def test_a_damaged_cache_is_named(scorer, tmp_path):
    cache = tmp_path / "batch.json"
    cache.write_text("{not json")
    with pytest.raises(UserError, match=f"{cache}.*delete it"):
        tuning.tuned_batch_size(scorer.logits, torch.zeros(4, 3, 8, 8), 4, cache, "k")


def test_the_key_names_models_shape_precision_and_device():
    model = build_model("small_cnn", 3, in_channels=3, image_size=8)
    key = tuning.cache_key([model, model], (3, 8, 8), "verified", torch.device("cpu"))
    params = sum(p.numel() for p in model.parameters())
    assert key.startswith(f"SmallCNN({params})+SmallCNN({params}) | 3x8x8 | verified | ")
    assert "threads" in key and torch.__version__ in key
