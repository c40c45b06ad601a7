"""Tests of the SIS engine (pathologies.sis.engine, pathologies.sis.gradient).

Golden cases use functions whose backward selection can be worked out by hand (sum, L2 norm,
a linear two-class model); invariants use a tiny random CNN on 5x5 images (p = 25, 325
candidate evaluations per image), so the whole file runs in seconds.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from pathologies.errors import UserError
from pathologies.models.registry import PixelDropout
from pathologies.sis.engine import (
    FunctionScorer,
    Masking,
    Scorer,
    backward_selection,
    find_sis,
    sis_collection,
    sufficient_subsets,
)
from pathologies.sis.gradient import gradient_backward_selection

SUM = FunctionScorer(lambda x: x.sum(dim=(1, 2, 3)))
L2 = FunctionScorer(lambda x: x.flatten(1).norm(dim=1))


def image(values, channels: int = 1) -> torch.Tensor:
    """One image (1, C, H, W) from nested lists (H, W) or (C, H, W)."""
    x = torch.tensor(values, dtype=torch.float32)
    return x.view(1, channels, *x.shape[-2:])


class TwoClassLinear(nn.Module):
    """logits (s, -s) with s = w . x: f(class 0) = sigmoid(2 s) is monotone in s."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.weights = nn.Parameter(weights.flatten().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1) * self.weights).sum(dim=1)
        return torch.stack([s, -s], dim=1)


class TinyCNN(nn.Module):
    """Two 3x3 convs and a global max-pool; ``scale`` sharpens the softmax."""

    def __init__(self, channels: int = 3, classes: int = 3, scale: float = 12.0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, classes, 3, padding=1, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.conv2(torch.relu(self.conv1(x))).amax(dim=(2, 3))


@pytest.fixture(scope="module")
def cnn() -> Scorer:
    # with these seeds the four images are predicted as classes 0, 1, 2, 1 with f = 0.63, 0.92,
    # 0.77, 0.77: mixed classes in one lockstep batch, and images on both sides of the thresholds
    torch.manual_seed(3)
    return Scorer(TinyCNN())


@pytest.fixture(scope="module")
def cnn_images() -> torch.Tensor:
    return torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))


def keep_only(images: torch.Tensor, features_per_image, masking: Masking = Masking()) -> torch.Tensor:
    """Images with every feature outside ``features_per_image[i]`` set to the masked value 0."""
    h, w = images.shape[-2:]
    keep = torch.stack([torch.as_tensor(masking.pixel_mask(f, h, w)) for f in features_per_image])
    return images * keep[:, None]


# ---------------------------------------------------------------------------------------------
# Golden cases


def test_sum_with_tie_and_channels_masked_together():
    # pixel sums over both channels: 0.25, 0.125, 0.25, 0.0625 (dyadic: exact in float32)
    x = image([[[0.125, 0.0625], [0.25, 0.03125]],
               [[0.125, 0.0625], [0.0, 0.03125]]], channels=2)
    (sel,) = backward_selection(SUM, x)
    assert sel.f_start == 0.6875
    # pixels 0 and 2 tie at 0.25: the lower flat index goes first
    np.testing.assert_array_equal(sel.order, [3, 1, 0, 2])
    np.testing.assert_array_equal(sel.values, [0.625, 0.5, 0.25, 0.0])
    assert sel.evaluations == 4 * 5 // 2 and sel.complete
    assert find_sis(sel, 0.25).tolist() == [2]
    assert find_sis(sel, 0.3).tolist() == [0, 2]
    assert find_sis(sel, 0.6).tolist() == [1, 0, 2]
    assert find_sis(sel, 0.65).tolist() == [3, 1, 0, 2]
    assert find_sis(sel, 0.7) is None
    assert [s.tolist() for s in sis_collection(SUM, x, 0.25)[0]] == [[2], [0]]
    np.testing.assert_array_equal(Masking().pixel_mask([0, 2], 2, 2), [[True, False], [True, False]])


def test_l2_norm_collection_matches_reference_example():
    # the reference implementation's docstring example, scaled by 1/10 to keep tau <= 1
    x = image([[0.01, 1.0, 0.5]])
    (sel,) = backward_selection(L2, x)
    np.testing.assert_array_equal(sel.order, [0, 2, 1])
    assert [s.tolist() for s in sis_collection(L2, x, 0.4)[0]] == [[1], [2]]


def test_empty_sis_when_fully_masked_input_is_sufficient():
    x = image([[1.0, 0.25]])
    masking = Masking(value=0.5)  # fully masked: f = 1.0
    (sel,) = backward_selection(SUM, x, masking=masking)
    np.testing.assert_array_equal(sel.values, [1.5, 1.0])
    assert find_sis(sel, 0.9).size == 0
    # the collection holds that one empty SIS and stops: masking nothing cannot make progress
    assert [s.size for s in sis_collection(SUM, x, 0.9, masking=masking)[0]] == [0]


def test_per_channel_mask_value():
    x = torch.zeros(1, 2, 2, 2)
    (sel,) = backward_selection(SUM, x, masking=Masking(value=(0.25, 0.5)))
    np.testing.assert_allclose(sel.values, [0.75, 1.5, 2.25, 3.0])


def linear_case():
    contributions = torch.tensor([0.3, -0.2, 0.5, 0.1, 0.9, -0.4, 0.2, 0.7, 0.05])
    x = torch.linspace(0.5, 1.5, 9)
    model = TwoClassLinear(contributions / x)
    expected = np.argsort(contributions.numpy(), kind="stable")  # smallest contribution goes first
    return Scorer(model), x.view(1, 1, 3, 3), expected, contributions


def test_linear_model_order_and_values():
    scorer, x, expected, contributions = linear_case()
    (sel,) = backward_selection(scorer, x, classes=[0])
    np.testing.assert_array_equal(sel.order, expected)
    s_after = contributions.sum().item() - np.cumsum(contributions.numpy()[expected].astype(np.float64))
    np.testing.assert_allclose(sel.values, 1 / (1 + np.exp(-2 * s_after)), atol=1e-6)


@pytest.mark.parametrize("block", [1, 2, 4])
def test_gradient_on_linear_model_follows_the_exact_order(block):
    # masking a negative contribution raises f: the gradient's sign must put it first
    scorer, x, expected, contributions = linear_case()
    (sel,) = gradient_backward_selection(scorer, x, block=block, classes=[0])
    np.testing.assert_array_equal(sel.order, expected)
    steps = -(-9 // block)
    assert len(sel.values) == steps and sel.block == block and sel.evaluations == steps + 1
    s_after = [contributions.sum().item() - contributions[expected[:min(9, (j + 1) * block)]].sum().item()
               for j in range(steps)]
    np.testing.assert_allclose(sel.values, 1 / (1 + np.exp(-2 * np.array(s_after))), atol=1e-6)
    assert sel.values[-1] == pytest.approx(0.5)  # fully masked: s = 0
    sis = find_sis(sel, 0.9)
    assert (9 - len(sis)) % block == 0  # whole blocks popped from the stack
    np.testing.assert_array_equal(sis, sel.order[9 - len(sis):])


def test_patches_cover_blocks_including_cut_off_edges():
    x = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5) / 100
    masking = Masking(patch=2)
    assert masking.grid(5, 5) == (3, 3) and masking.feature_count(5, 5) == 9
    of_pixel = masking.feature_of_pixel(5, 5)
    patch_sums = np.bincount(of_pixel.ravel(), weights=x.flatten().double().numpy(), minlength=9)
    (sel,) = backward_selection(SUM, x, masking=masking)
    np.testing.assert_array_equal(sel.order, np.argsort(patch_sums, kind="stable"))
    np.testing.assert_allclose(sel.values, patch_sums.sum() - np.cumsum(patch_sums[sel.order]), atol=1e-6)
    mask = masking.pixel_mask([8], 5, 5)  # the 1x1 corner patch
    assert mask.sum() == 1 and mask[4, 4]
    assert masking.pixel_mask([4], 5, 5)[2:4, 2:4].all() and masking.pixel_mask([4], 5, 5).sum() == 4
    (gsel,) = gradient_backward_selection(SUM, x, masking=masking, block=2)
    assert sorted(gsel.order.tolist()) == list(range(9))


# ---------------------------------------------------------------------------------------------
# Invariants on a small random CNN


def confident(scorer, images, threshold):
    _, f = scorer.predict(images)
    return int((f >= threshold).sum())


def test_exact_invariants_on_random_cnn(cnn, cnn_images):
    thresholds = (0.6, 0.75, 0.9)
    assert confident(cnn, cnn_images, 0.75) == 3  # the test below is not vacuous
    selections = backward_selection(cnn, cnn_images, batch_size=64)
    p = 25
    for i, sel in enumerate(selections):
        assert sorted(sel.order.tolist()) == list(range(p))
        assert sel.evaluations == p * (p + 1) // 2
        # stored curve replays: f after masking each prefix of the order
        prefixes = [sel.order[:t + 1] for t in range(p)]
        kept = [np.setdiff1d(np.arange(p), prefix) for prefix in prefixes]
        replay = cnn(keep_only(cnn_images[i].expand(p, -1, -1, -1), kept), torch.full((p,), sel.class_index))
        np.testing.assert_allclose(replay.numpy(), sel.values, rtol=0, atol=1e-6)
        previous = None
        for threshold in thresholds:
            sis = find_sis(sel, threshold)
            if sel.f_start < threshold:
                assert sis is None
                continue
            np.testing.assert_array_equal(sis, sel.order[p - len(sis):])  # a suffix
            assert Masking().pixel_mask(sis, 5, 5).sum() == len(sis)
            classes = torch.tensor([sel.class_index] * 2)
            f_sis, f_smaller = cnn(keep_only(cnn_images[[i, i]], [sis, sis[1:]]), classes).tolist()
            assert f_sis >= threshold
            if len(sis):
                assert f_smaller < threshold  # greedily minimal
            if previous is not None:
                assert set(previous) <= set(sis.tolist())  # larger tau: superset
            previous = sis.tolist()


@pytest.mark.parametrize("select", [
    backward_selection,
    functools.partial(gradient_backward_selection, block=1),
    functools.partial(gradient_backward_selection, block=3),
], ids=["exact", "gradient_k1", "gradient_k3"])
def test_subsets_and_collections_are_sufficient_and_disjoint(cnn, cnn_images, select):
    threshold = 0.7
    assert confident(cnn, cnn_images, threshold) == 3
    selections = select(cnn, cnn_images)
    found = sufficient_subsets(cnn, cnn_images, selections, threshold)
    classes, f_full = cnn.predict(cnn_images)
    for i, sis in enumerate(found):
        if f_full[i] < threshold:
            assert sis is None
            continue
        assert cnn(keep_only(cnn_images[i:i + 1], [sis]), classes[i:i + 1]).item() >= threshold
    collections = sis_collection(cnn, cnn_images, threshold, select=select)
    assert sum(len(c) for c in collections) >= 2
    for i, collection in enumerate(collections):
        if f_full[i] < threshold:
            assert collection == []
        seen: set[int] = set()
        for sis in collection:
            assert not seen & set(sis.tolist())
            seen |= set(sis.tolist())
            assert cnn(keep_only(cnn_images[i:i + 1], [sis]), classes[i:i + 1]).item() >= threshold
        if collection and len(collection[-1]):  # stopped because what is left is not sufficient
            left = np.setdiff1d(np.arange(25), sorted(seen))
            assert cnn(keep_only(cnn_images[i:i + 1], [left]), classes[i:i + 1]).item() < threshold


def test_unreproducible_stored_value_extends_the_sis_until_verified():
    # f gains 0.05 in batches of more than one input: the stored curve (batches of 3 and 2
    # candidates) overstates f on the single-image verification pass
    flaky = FunctionScorer(lambda x: x.sum(dim=(1, 2, 3)) + (0.05 if len(x) > 1 else 0.0))
    x = image([[0.5, 0.25, 0.125]])
    (sel,) = backward_selection(flaky, x)
    np.testing.assert_allclose(sel.values, [0.8, 0.55, 0.0])
    assert find_sis(sel, 0.52).tolist() == [0]  # f({0}) = 0.5 when evaluated alone
    assert [s.tolist() for s in sufficient_subsets(flaky, x, [sel], 0.52)] == [[1, 0]]


def test_images_below_threshold_get_no_sis(cnn, cnn_images):
    selections = backward_selection(cnn, cnn_images[:2])
    assert [find_sis(s, 1.0) for s in selections] == [None, None]
    assert sufficient_subsets(cnn, cnn_images[:2], selections, 1.0) == [None, None]
    assert sis_collection(cnn, cnn_images[:2], 1.0) == [[], []]


# ---------------------------------------------------------------------------------------------
# Lockstep batching changes no answer


def assert_same(a, b):
    np.testing.assert_array_equal(a.order, b.order)
    # float32 forward passes differ in the last bits between batch sizes; the order must not
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-6)
    assert (a.class_index, a.remaining, a.evaluations) == (b.class_index, b.remaining, b.evaluations)


def test_lockstep_equals_per_image_runs(cnn, cnn_images):
    # batch size 7 divides neither 4 * 25 nor 25 candidates; the masked features give the
    # images different numbers of remaining features, as in later rounds of a collection
    masked = torch.zeros(4, 25, dtype=torch.bool)
    masked[1, [0, 7, 12]] = True
    masked[3, 20:] = True
    lockstep = backward_selection(cnn, cnn_images, masked=masked, batch_size=7)
    for i in range(4):
        (alone,) = backward_selection(cnn, cnn_images[i:i + 1], masked=masked[i:i + 1], batch_size=1000)
        assert_same(lockstep[i], alone)
    assert lockstep[3].remaining == 20 and lockstep[3].evaluations == 20 * 21 // 2
    assert not set(lockstep[1].order.tolist()) & {0, 7, 12}


def test_gradient_lockstep_equals_per_image_runs(cnn, cnn_images):
    lockstep = gradient_backward_selection(cnn, cnn_images, block=2, batch_size=3)
    for i in range(4):
        assert_same(lockstep[i], gradient_backward_selection(cnn, cnn_images[i:i + 1], block=2)[0])


def test_progress_counts_every_evaluation(cnn, cnn_images):
    done: list[int] = []
    selections = backward_selection(cnn, cnn_images, progress=done.append)
    assert len(done) == 25 and sum(done) == sum(s.evaluations for s in selections) == 4 * 325
    passes: list[int] = []
    gradient_backward_selection(cnn, cnn_images, block=10, progress=passes.append)
    assert passes == [4, 4, 4]


def test_max_steps_gives_a_partial_selection(cnn, cnn_images):
    partial = backward_selection(cnn, cnn_images[:2], max_steps=3)
    full = backward_selection(cnn, cnn_images[:2])
    for a, b in zip(partial, full, strict=True):
        assert not a.complete
        np.testing.assert_array_equal(a.order, b.order[:3])
        assert a.evaluations == 25 + 24 + 23
        with pytest.raises(ValueError, match="complete"):
            find_sis(a, 0.5)


# ---------------------------------------------------------------------------------------------
# Random tie-breaking


def test_random_tie_breaking_is_seeded_and_per_image():
    x = torch.full((2, 1, 4, 4), 0.25)  # every candidate ties
    assert backward_selection(SUM, x)[0].order.tolist() == list(range(16))
    first = backward_selection(SUM, x, tie_break_seeds=[5, 6])
    again = backward_selection(SUM, x, tie_break_seeds=[5, 6])
    alone = backward_selection(SUM, x[:1], tie_break_seeds=[6])
    assert first[0].order.tolist() == again[0].order.tolist()
    assert first[1].order.tolist() == alone[0].order.tolist()  # independent of batch partners
    assert first[0].order.tolist() != first[1].order.tolist()
    assert first[0].order.tolist() != list(range(16))
    np.testing.assert_allclose(first[0].values, 4.0 - 0.25 * np.arange(1, 17))  # noise not stored
    # the noise (std 1e-6) only breaks near-ties: gaps of 1e-4 keep their order
    spread = 0.1 + 1e-4 * torch.randperm(16, generator=torch.Generator().manual_seed(0)).float()
    (sel,) = backward_selection(SUM, spread.view(1, 1, 4, 4), tie_break_seeds=[7])
    np.testing.assert_array_equal(sel.order, np.argsort(spread.numpy()))
    grad_a = gradient_backward_selection(SUM, x, tie_break_seeds=[1, 2])
    grad_b = gradient_backward_selection(SUM, x, tie_break_seeds=[1, 2])
    assert grad_a[0].order.tolist() == grad_b[0].order.tolist() != list(range(16))
    collections = [sis_collection(SUM, x, 0.5, tie_break_seeds=[3, 3]) for _ in range(2)]
    assert [[s.tolist() for s in c] for c in collections[0]] == [[s.tolist() for s in c] for c in collections[1]]


# ---------------------------------------------------------------------------------------------
# Scorers


def test_scorer_ensemble_temperature_and_eval_mode():
    torch.manual_seed(3)
    models = [TinyCNN(scale=1.0), TinyCNN(scale=1.0)]
    x = torch.randn(2, 3, 5, 5)
    for m in models:
        m.train()
    scorer = Scorer(models, temperature=2.0)
    assert not any(m.training for m in models)
    logits = (models[0](x) + models[1](x)) / 2 / 2.0
    classes = torch.tensor([0, 2])
    expected = logits.double().softmax(1)[[0, 1], classes]
    torch.testing.assert_close(scorer(x, classes), expected.detach())
    predicted, f = scorer.predict(x)
    torch.testing.assert_close(predicted, logits.argmax(1))


def test_float64_softmax_keeps_confident_predictions_apart():
    # logits 40 and 30 above the rest: both round to probability 1.0 in float32
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    x = torch.tensor([[40.0, 0.0], [30.0, 0.0]]).view(2, 1, 1, 2)
    flat = nn.Sequential(nn.Flatten(), model)
    classes = torch.zeros(2, dtype=torch.long)
    f64 = Scorer(flat)(x, classes)
    assert f64[0] > f64[1] and f64.dtype == torch.float64
    assert Scorer(flat, softmax_dtype=torch.float32)(x, classes).tolist() == [1.0, 1.0]


def test_removal_steps_map_blocks_to_features():
    scorer, x, expected, _ = linear_case()
    (sel,) = gradient_backward_selection(scorer, x, block=4, classes=[0])
    steps = sel.removal_steps(9)
    np.testing.assert_array_equal(steps[expected], [0, 0, 0, 0, 1, 1, 1, 1, 2])
    np.testing.assert_array_equal(Masking().feature_map(steps, 3, 3), steps.reshape(3, 3))


def test_input_dropout_is_off_unless_asked():
    torch.manual_seed(0)
    model = nn.Sequential(PixelDropout(0.5), TinyCNN())
    x = torch.randn(8, 3, 5, 5)
    classes = torch.zeros(8, dtype=torch.long)
    deterministic = Scorer(model)
    torch.testing.assert_close(deterministic(x, classes), deterministic(x, classes))
    noisy = Scorer(model, dropout=True)
    assert not torch.equal(noisy(x, classes), noisy(x, classes))


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("threshold", [0, 0.0, -0.5, 1.01, float("nan"), True, "0.9"])
def test_threshold_outside_unit_interval_is_a_user_error(threshold):
    (sel,) = backward_selection(SUM, image([[0.5, 0.25]]))
    with pytest.raises(UserError, match="threshold") as err:
        find_sis(sel, threshold)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="threshold"):
        sis_collection(SUM, image([[0.5, 0.25]]), threshold)


def test_shape_mismatch_is_a_user_error(cnn_images):
    with pytest.raises(UserError, match=r"\(3, 5, 5\).*\(3, 6, 6\)"):
        backward_selection(Scorer(TinyCNN(), input_shape=(3, 6, 6)), cnn_images)
    with pytest.raises(UserError, match="cannot take images of shape") as err:
        backward_selection(Scorer(TinyCNN(channels=1)), cnn_images)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"\(N, C, H, W\)"):
        backward_selection(SUM, torch.zeros(3, 5, 5))
    with pytest.raises(UserError, match="mask value"):
        backward_selection(SUM, cnn_images, masking=Masking(value=(0.0, 1.0)))


@pytest.mark.parametrize("kwargs, message", [
    ({"tie_break_seeds": [1]}, "tie-break seeds"),
    ({"classes": [0, 1, 2, 9]}, "out of range"),
    ({"classes": [0]}, "one per image"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_options_are_user_errors(cnn, cnn_images, kwargs, message):
    with pytest.raises(UserError, match=message):
        backward_selection(cnn, cnn_images, **kwargs)


@pytest.mark.parametrize("patch", [0, -1, 1.5, True])
def test_bad_patch_size_is_a_user_error(patch):
    with pytest.raises(UserError, match="patch size"):
        Masking(patch=patch)


# ---------------------------------------------------------------------------------------------
# Benchmark


def test_benchmark_prints_rates_and_efficiency_last(capsys):
    from pathologies.bench import sis as bench

    assert bench.main(["--arch", "small_cnn", "--image-size", "16", "--batches", "2", "--batch-size", "64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("32x32: exact backward selection 524,800 evaluations") and "EXTRAPOLATED" in line
               for line in lines)
    assert lines[-1].startswith("sis_efficiency=") and float(lines[-1].split("=")[1]) > 0


def test_bf16_autocast_scorer_stays_close_to_fp32(cnn_images):
    torch.manual_seed(3)
    model = TinyCNN()
    classes = torch.tensor([0, 1, 2, 1])
    fp32 = Scorer(model)(cnn_images, classes)
    bf16 = Scorer(model, amp_dtype=torch.bfloat16)(cnn_images, classes)
    assert bf16.dtype == torch.float64 and not torch.equal(bf16, fp32)
    torch.testing.assert_close(bf16, fp32, atol=0.05, rtol=0)


def test_verified_benchmark_compares_three_arms_on_the_same_images(capsys):
    from pathologies.bench import sis as bench

    assert bench.main(["--precision", "verified", "--arch", "small_cnn", "--image-size", "8", "--images", "2",
                       "--lockstep", "2", "--patch", "2", "--epochs", "1", "--train-images", "128",
                       "--batch-size", "32", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    compared = int(next(line for line in lines if line.startswith("orders_identical=")).split("/")[1])
    assert compared >= 1 and f"orders_identical={compared}/{compared}" in lines
    assert any(line.startswith("SIS batch size ") and "candidates/s by batch size: 16:" in line for line in lines)
    assert any(line.startswith("strict_tuned_speedup=") for line in lines)
    assert lines[-1].startswith("sis_verified_speedup=") and float(lines[-1].split("=")[1]) > 0
