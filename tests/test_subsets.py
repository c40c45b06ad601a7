"""Pixel-subset datasets: exact sizes, BS = last of the removal order, seeded random draws, exact masking,
augmentation that keeps image and mask aligned, and the authors' "(+)": augmented once, then masked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from overinterp_fixtures import write_sis_file
from pathologies.data.fill import apply_masks, noisy_linear_impute
from pathologies.data.layout import dataset_info, load_split, mask_colour, to_model_input
from pathologies.errors import UserError
from pathologies.io import h5py
from pathologies.overinterp.subset_masks import (
    SubsetRequest,
    backward_selection_features,
    feature_masks,
    random_features,
    subset_size,
)
from pathologies.overinterp.subsets import (
    build_subset_dataset,
    build_subset_datasets,
    main,
    read_masks,
    zeroes_masked_pixels,
)
from pathologies.sis.engine import Masking
from pathologies.training.train import InMemorySplit, augment_batch


@pytest.mark.parametrize("fraction, count, expected", [
    (0.05, 1024, 51), (0.1, 64, 6), (0.05, 64, 3), (0.5, 3, 2), (0.25, 2, 1), (0.001, 64, 1), (1.0, 7, 7),
    (0.1, 50176, 5018),
])
def test_subset_size_rounds_half_up_and_keeps_at_least_one(fraction, count, expected):
    assert subset_size(fraction, count) == expected


def test_subset_size_ceil_keeps_the_reference_pixel_counts():
    """rounding 'ceil' == the authors' int(np.ceil(1024 * frac_to_keep)) at 5/10/15/20 % (52 at 5 %)."""
    fractions = (0.05, 0.1, 0.15, 0.2)
    reference = [int(np.ceil(1024 * fraction)) for fraction in fractions]
    assert [subset_size(f, 1024, "ceil") for f in fractions] == reference == [52, 103, 154, 205]
    assert [subset_size(f, 1024) for f in fractions] == [51, 102, 154, 205]  # half up, the project's default
    with pytest.raises(UserError, match="rounding 'floor' is not one of half_up, ceil"):
        subset_size(0.05, 1024, "floor")


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_subset_size_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(UserError, match="not in \\(0, 1\\]"):
        subset_size(fraction, 64)


def test_backward_selection_subset_is_the_last_removed_features():
    order = np.array([[3, 1, 0, 2], [0, 1, 2, 3]])
    assert backward_selection_features(order, 2).tolist() == [[0, 2], [2, 3]]
    assert backward_selection_features(order, 4).tolist() == order.tolist()


def test_random_subsets_are_exact_reproducible_and_differ_between_draws():
    a = random_features(200, 64, 6, seed=0, draw=0, stream="train")
    assert a.shape == (200, 6)
    assert all(len(set(row)) == 6 for row in a.tolist()) and a.min() >= 0 and a.max() < 64
    assert np.array_equal(a, random_features(200, 64, 6, seed=0, draw=0, stream="train"))
    for other in (random_features(200, 64, 6, seed=0, draw=1, stream="train"),
                  random_features(200, 64, 6, seed=1, draw=0, stream="train"),
                  random_features(200, 64, 6, seed=0, draw=0, stream="test")):
        assert np.mean(np.all(other == a, axis=1)) < 0.01
    # uniform: every feature is chosen about n * k / p times
    counts = np.bincount(random_features(20000, 64, 6, 0, 0, "x").ravel(), minlength=64)
    assert np.abs(counts - 20000 * 6 / 64).max() < 5 * np.sqrt(20000 * 6 / 64)


def test_feature_masks_cover_whole_patches_including_cut_edges():
    masking = Masking(patch=2)  # 5x5 image: 3x3 patch grid, edge patches are cut to 2x1, 1x2, 1x1
    masks = feature_masks(np.array([[0, 8], [2, 6]]), masking, 5, 5)
    assert masks[0].sum() == 4 + 1 and masks[0][:2, :2].all() and masks[0][4, 4]
    assert masks[1].sum() == 2 + 2 and masks[1][:2, 4].all() and masks[1][4, :2].all()


def test_masked_uint8_colour_normalises_to_exactly_zero_for_every_value():
    for value in range(256):
        for std in (0.2, 0.2470322, 0.3, 1e-6):
            x = to_model_input(np.full((1, 1, 1, 1), value, np.uint8), mask_colour([value / 255.0]) / 255.0, [std])
            assert x.item() == 0.0


def _subset(tmp_path, quadrant_dataset, kind, **kwargs):
    """A 10% subset dataset of 100 train and 4 test images with random removal orders."""
    tmp_path.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    sis = {}
    for split, rows in (("train", np.arange(0, 200, 2)), ("test", np.array([5, 1, 9, 30]))):
        order = np.stack([rng.permutation(64) for _ in rows])
        sis[split] = write_sis_file(tmp_path / f"sis_{split}.h5", quadrant_dataset, split, rows, order)
    out = tmp_path / f"{kind}.h5"
    build_subset_dataset(out, quadrant_dataset, sis, kind=kind, fraction=0.1, **kwargs)
    return out, sis


def test_bs_subset_dataset_keeps_exactly_the_last_features_and_masks_the_rest(tmp_path, quadrant_dataset):
    out, sis = _subset(tmp_path, quadrant_dataset, "bs")
    info, source = dataset_info(out), dataset_info(quadrant_dataset)
    assert info.kind == "pixel_subset" and set(info.splits) == {"train", "test"}
    assert np.allclose(info.mean, np.floor(np.asarray(source.mean) * 255 + 0.5) / 255) and info.std == source.std
    colour = mask_colour(source.mean)
    for split in ("train", "test"):
        data, original = load_split(out, split), load_split(quadrant_dataset, split)
        with h5py.File(sis[split]) as handle:
            rows, order = handle["index"][()], handle["order"][()]
        masks = read_masks(out, split)
        assert (masks.reshape(len(rows), -1).sum(axis=1) == 6).all()  # round(0.1 * 64)
        for i in range(len(rows)):
            assert set(np.flatnonzero(masks[i].ravel())) == set(order[i, -6:])
        assert np.array_equal(data.images, np.where(masks[..., None], original.images[rows], colour))
        assert np.array_equal(data.labels, original.labels[rows]) and np.array_equal(data.ids, original.ids[rows])
        with h5py.File(out) as handle:
            assert np.array_equal(handle[f"{split}/rows"][()], rows)
            assert handle.attrs["features_kept"] == 6 and handle.attrs["subset_kind"] == "bs"
        # what the trainer sees: exactly 0 (the SIS masked value) outside the subset
        x = to_model_input(data.images, info.mean, info.std)
        assert (x.permute(0, 2, 3, 1)[torch.as_tensor(~masks)] == 0).all()


def test_random_subset_datasets_are_reproducible_and_differ_between_draws(tmp_path, quadrant_dataset):
    first, _ = _subset(tmp_path / "a", quadrant_dataset, "random", seed=3, draw=1)
    again, _ = _subset(tmp_path / "b", quadrant_dataset, "random", seed=3, draw=1)
    other, _ = _subset(tmp_path / "c", quadrant_dataset, "random", seed=3, draw=2)
    masks = read_masks(first, "train")
    assert (masks.reshape(len(masks), -1).sum(axis=1) == 6).all()
    assert np.array_equal(masks, read_masks(again, "train"))
    assert np.array_equal(load_split(first, "train").images, load_split(again, "train").images)
    assert not np.array_equal(masks, read_masks(other, "train"))
    # the subsets of another (shifted) test set draw from streams of their own
    shifted, _ = _subset(tmp_path / "d", quadrant_dataset, "random", seed=3, draw=1, stream="c10c")
    assert not np.array_equal(masks, read_masks(shifted, "train"))
    with h5py.File(shifted) as handle:
        assert handle.attrs["random_stream"] == "c10c"


def _reference_random_masks(n_images, size, seed):
    """The authors' RandomSubsetsCIFARDataset on 8x8 images: np.random.seed(seed), then per image in split order
    create_random_mask((1, 8, 8), size) (np.random.choice over the C-order flat mask)."""
    np.random.seed(seed)
    masks = []
    for _ in range(n_images):
        flat = np.zeros(64, dtype=bool)
        flat[np.random.choice(64, replace=False, size=size)] = True
        masks.append(flat.reshape(8, 8))
    return np.array(masks)


def test_reference_random_subsets_are_the_authors_draw_for_every_model_seed_and_draw(tmp_path, quadrant_dataset):
    """random_draw 'reference': train seed 1234, test 5678, one draw per image over the whole split (rows kept),
    with ceil rounding; identical whatever the seed, draw number or rerun, so every model shares the subsets."""
    outs = [_subset(tmp_path / name, quadrant_dataset, "random", seed=seed, draw=draw, rounding="ceil",
                    random_draw="reference")[0]
            for name, seed, draw in (("a", 0, 0), ("b", 0, 0), ("c", 7, 3))]
    sizes = {split: len(load_split(quadrant_dataset, split).labels) for split in ("train", "test")}
    size = int(np.ceil(64 * 0.1))  # 7, where half up keeps 6
    for split, seed in (("train", 1234), ("test", 5678)):
        with h5py.File(outs[0]) as handle:
            rows = handle[f"{split}/rows"][()]
            assert handle.attrs["random_draw"] == "reference" and handle.attrs["rounding"] == "ceil"
            assert handle.attrs["features_kept"] == size
        expected = _reference_random_masks(sizes[split], size, seed)[rows]
        for out in outs:
            np.testing.assert_array_equal(read_masks(out, split), expected)
        np.testing.assert_array_equal(load_split(outs[2], split).images, load_split(outs[0], split).images)
    with pytest.raises(UserError, match="--random-draw 'legacy' is not one of project, reference"):
        _subset(tmp_path / "d", quadrant_dataset, "random", random_draw="legacy")


@pytest.mark.parametrize("pad, flip", [(1, True), (2, False), (0, True)])
def test_augmentation_moves_image_and_mask_together(tmp_path, quadrant_dataset, pad, flip):
    """Augmenting the stored masked image == augmenting the full image and masking with the augmented mask."""
    out, _ = _subset(tmp_path, quadrant_dataset, "bs")
    info = dataset_info(out)
    masked = InMemorySplit.load(out, "train", info.mean, info.std, torch.device("cpu")).x  # what `train` holds
    with h5py.File(out) as handle:
        rows = handle["train/rows"][()]
    full = to_model_input(load_split(quadrant_dataset, "train").images[rows], info.mean, info.std)
    mask = torch.as_tensor(read_masks(out, "train"))[:, None].float()
    (aug_masked,) = augment_batch(torch.Generator().manual_seed(7), pad, flip, masked)
    aug_full, aug_mask = augment_batch(torch.Generator().manual_seed(7), pad, flip, full, mask)
    assert torch.equal(aug_masked, torch.where(aug_mask.bool(), aug_full, torch.zeros(())))
    assert (aug_masked[~aug_mask.bool().expand_as(aug_masked)] == 0).all()
    assert not torch.equal(aug_mask, mask) or pad == 0


def _crop_flip_once(images, seed, draw, pad, hflip):
    """The authors' train transform applied once per image (RandomCrop(H, padding=pad) with black padding, then
    RandomHorizontalFlip), image by image, with the draws of the documented stream (seed, draw, augment/train):
    all top offsets, then all left offsets, then one uniform per image (flip below 1/2)."""
    import zlib

    rng = np.random.default_rng([seed, draw, zlib.crc32(b"augment/train")])
    n, height, width = images.shape[:3]
    top, left, flips = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n), rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        padded = np.zeros((height + 2 * pad, width + 2 * pad, images.shape[3]), images.dtype)
        padded[pad:pad + height, pad:pad + width] = images[i]
        crop = padded[top[i]:top[i] + height, left[i]:left[i] + width]
        out[i] = crop[:, ::-1] if hflip and flips[i] else crop
    return out, np.stack([top, left], axis=1), flips & hflip


@pytest.mark.parametrize("kind", ["bs", "random"])
def test_reference_plus_subset_is_augmented_once_then_masked_with_the_unaugmented_mask(tmp_path, quadrant_dataset,
                                                                                         kind):
    """augment_mode 'reference' ("(+)" as the authors' code): train image = crop/flip(image) where the mask of the
    un-augmented image keeps pixels, the mean colour elsewhere; the test split is the un-augmented subset's."""
    plain, sis = _subset(tmp_path / "plain", quadrant_dataset, kind, seed=5, draw=2)
    augmented = tmp_path / "aug.h5"
    assert main(["--dataset", str(quadrant_dataset), "--seed", "5", *(f"--sis={k}={v}" for k, v in sis.items()),
                 "--augmented-subset", kind, "0.1", "2", "e.aug", str(augmented), "--crop-padding", "3"]) == 0
    colour = mask_colour(dataset_info(quadrant_dataset).mean)
    with h5py.File(sis["train"]) as handle:
        rows, order = handle["index"][()], handle["order"][()]
    original = load_split(quadrant_dataset, "train").images[rows]
    masks = read_masks(plain, "train")  # un-augmented: BS = the last 6 of each removal order
    if kind == "bs":
        assert all(set(np.flatnonzero(masks[i].ravel())) == set(order[i, -6:]) for i in range(len(rows)))
    expected, offsets, flips = _crop_flip_once(original, seed=5, draw=2, pad=3, hflip=True)
    assert 0 < flips.sum() < len(flips) and len(np.unique(offsets)) == 7
    np.testing.assert_array_equal(read_masks(augmented, "train"), masks)
    np.testing.assert_array_equal(load_split(augmented, "train").images, np.where(masks[..., None], expected, colour))
    assert not np.array_equal(load_split(augmented, "train").images, load_split(plain, "train").images)
    assert (expected[:, :1, :1] == 0).any()  # some crops reach into the black padding
    with h5py.File(augmented) as handle:
        np.testing.assert_array_equal(handle["train/crop_offsets"][()], offsets)
        np.testing.assert_array_equal(handle["train/flipped"][()], flips)
        assert handle.attrs["augmented_once"] and handle.attrs["crop_padding"] == 3 and handle.attrs["hflip"]
        assert handle.attrs["augment_draw"] == 2 and "crop_offsets" not in handle["test"]
    for name in ("images", "labels", "ids"):  # test subsets are never augmented
        np.testing.assert_array_equal(getattr(load_split(augmented, "test"), name), getattr(load_split(plain, "test"),
                                                                                             name))
    np.testing.assert_array_equal(read_masks(augmented, "test"), read_masks(plain, "test"))
    again = tmp_path / "again.h5"  # a rerun writes the same images
    build_subset_datasets(quadrant_dataset, sis, [SubsetRequest(kind, 0.1, 2, "e.aug", str(again), augment=True)],
                          seed=5, crop_padding=3)
    np.testing.assert_array_equal(load_split(again, "train").images, load_split(augmented, "train").images)
    other = tmp_path / "other.h5"  # another replicate (draw), no flips: other crops
    assert main(["--dataset", str(quadrant_dataset), "--seed", "5", *(f"--sis={k}={v}" for k, v in sis.items()),
                 "--augmented-subset", kind, "0.1", "3", "e.aug3", str(other), "--crop-padding", "3",
                 "--no-hflip"]) == 0
    with h5py.File(other) as handle:
        assert not handle["train/flipped"][()].any()
        assert not np.array_equal(handle["train/crop_offsets"][()], offsets)


def test_augmented_subsets_refuse_what_they_cannot_augment(tmp_path, quadrant_dataset):
    _, sis = _subset(tmp_path, quadrant_dataset, "bs")
    with pytest.raises(UserError, match="a mask-only subset has no image to augment"):
        build_subset_datasets(quadrant_dataset, sis, [SubsetRequest("mask", 0.1, 0, "m", str(tmp_path / "m.h5"),
                                                                    augment=True)])
    with pytest.raises(UserError, match="augments the train split, but no train SIS file is given"):
        build_subset_datasets(quadrant_dataset, {"test": sis["test"]},
                              [SubsetRequest("bs", 0.1, 0, "b", str(tmp_path / "b.h5"), augment=True)])
    assert not (tmp_path / "m.h5").exists() and not (tmp_path / "b.h5").exists()


def test_an_imputed_plus_subset_keeps_the_plain_subsets_test_images(tmp_path, quadrant_dataset):
    """With noisy linear imputation too, the (+) subset's test split is the plain BS subset's, image for image."""
    plain, sis = _subset(tmp_path, quadrant_dataset, "bs", masking="noisy_linear", draw=-1)
    plus = tmp_path / "plus.h5"
    build_subset_datasets(quadrant_dataset, sis, [SubsetRequest("bs", 0.1, 3, "p", str(plus), augment=True)],
                          masking="noisy_linear", crop_padding=2)
    np.testing.assert_array_equal(load_split(plus, "test").images, load_split(plain, "test").images)
    masks = read_masks(plain, "train")
    np.testing.assert_array_equal(read_masks(plus, "train"), masks)
    assert not np.array_equal(load_split(plus, "train").images[masks], load_split(plain, "train").images[masks])


def test_apply_masks_sets_the_colour_per_channel():
    images = np.full((1, 2, 2, 3), 200, np.uint8)
    out = apply_masks(images, np.array([[[True, False], [False, True]]]), np.array([1, 2, 3], np.uint8))
    assert out[0, 0, 1].tolist() == [1, 2, 3] and out[0, 0, 0].tolist() == [200] * 3


def test_sis_file_of_another_image_size_is_a_clear_error(tmp_path, quadrant_dataset):
    sis = write_sis_file(tmp_path / "sis.h5", quadrant_dataset, "test", np.arange(3),
                         np.tile(np.arange(64), (3, 1)))
    with h5py.File(sis, "a") as handle:
        del handle["order"]
        handle["order"] = np.tile(np.arange(16, dtype=np.int32), (3, 1))
    with pytest.raises(UserError, match="orders 16 features"):
        build_subset_dataset(tmp_path / "out.h5", quadrant_dataset, {"test": sis}, kind="bs", fraction=0.1)
    assert not (tmp_path / "out.h5").exists()


def test_cli_writes_several_subsets_in_one_call(tmp_path, quadrant_dataset):
    sis = write_sis_file(tmp_path / "sis.h5", quadrant_dataset, "test", np.arange(4), np.tile(np.arange(64), (4, 1)))
    assert main(["--dataset", str(quadrant_dataset), "--sis", f"test={sis}", "--seed", "1",
                 "--subset", "bs", "0.25", "-1", "e.bs25", str(tmp_path / "bs25.h5"),
                 "--subset", "random", "0.1", "3", "e.random10.d3", str(tmp_path / "random10_d3.h5")]) == 0
    assert dataset_info(tmp_path / "bs25.h5").name == "e.bs25"
    assert read_masks(tmp_path / "bs25.h5", "test").reshape(4, -1)[:, 48:].all()
    with h5py.File(tmp_path / "random10_d3.h5") as handle:
        assert handle.attrs["draw"] == 3 and handle.attrs["random_seed"] == 1 and handle.attrs["features_kept"] == 6


def test_cli_reports_bad_arguments_in_one_line(tmp_path, quadrant_dataset, capsys):
    out = str(tmp_path / "x.h5")
    for args, message in ((["--sis", "test", "--subset", "bs", "0.1", "-1", "x", out], "is not <split>=<file>"),
                          ([f"--sis=test={tmp_path / 'missing.h5'}", "--subset", "bs", "0.1", "-1", "x", out],
                           "does not exist"),
                          ([f"--sis=test={tmp_path}", "--subset", "bs", "ten", "-1", "x", out], "must be a number"),
                          ([f"--sis=test={tmp_path}", "--subset", "all", "0.1", "-1", "x", out], "is not one of")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--dataset", str(quadrant_dataset), *args])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_a_cut_through_a_gradient_block_keeps_the_blocks_last_features():
    # Batched Gradient, k = 3: blocks [5, 0, 7] [2, 6, 1] [4, 3]; each block sorted by decreasing gradient
    order = np.array([[5, 0, 7, 2, 6, 1, 4, 3]])
    # 4 features: the last block (4, 3) and the last 2 of the block before: its lowest-gradient ones (6, 1)
    assert backward_selection_features(order, 4).tolist() == [[6, 1, 4, 3]]


def test_mask_only_subset_holds_the_bs_mask_and_no_pixel_values(tmp_path, quadrant_dataset):
    bs, sis = _subset(tmp_path / "bs", quadrant_dataset, "bs")
    out = tmp_path / "mask.h5"
    build_subset_dataset(out, quadrant_dataset, sis, kind="mask", fraction=0.1)
    colour = mask_colour(dataset_info(quadrant_dataset).mean)
    for split in ("train", "test"):
        masks = read_masks(out, split)
        assert np.array_equal(masks, read_masks(bs, split))
        images = load_split(out, split).images
        assert np.array_equal(images, np.where(masks[..., None], np.uint8(255), colour))
        assert np.array_equal(load_split(out, split).labels, load_split(bs, split).labels)
    with h5py.File(out) as handle:
        assert handle.attrs["subset_kind"] == "mask" and handle.attrs["masking"] == "mean"
    assert zeroes_masked_pixels(out, "test")


def test_noisy_linear_imputation_fills_masked_pixels_from_their_neighbours():
    ramp = (np.add.outer(np.arange(8), 2 * np.arange(8)) * 10).astype(np.uint8)[None, :, :, None]  # linear image
    keep = np.ones((1, 8, 8), bool)
    keep[0, 2:6, 2:6] = False  # a 4x4 hole, every neighbour inside the image
    exact = noisy_linear_impute(ramp, keep, np.random.default_rng(0), np.array([0], np.uint8), noise=0.0)
    assert np.array_equal(exact, ramp)  # the weighted neighbour mean reproduces a linear image exactly
    noisy = noisy_linear_impute(ramp, keep, np.random.default_rng(0), np.array([0], np.uint8))
    assert np.array_equal(noisy[0][keep[0]], ramp[0][keep[0]])  # kept pixels are untouched
    assert 0 < np.abs(noisy.astype(int) - ramp).max() <= 12  # noise of std 0.01 (2.55 grey levels)
    again = noisy_linear_impute(ramp, keep, np.random.default_rng(0), np.array([0], np.uint8))
    assert np.array_equal(noisy, again)
    nothing = noisy_linear_impute(ramp, np.zeros((1, 8, 8), bool), np.random.default_rng(0),
                                  np.array([100], np.uint8), noise=0.0)
    assert (nothing == 100).all()


def test_noisy_linear_subsets_are_evaluated_as_stored(tmp_path, quadrant_dataset):
    out, sis = _subset(tmp_path, quadrant_dataset, "bs", masking="noisy_linear", draw=-1)  # as the workflow
    with h5py.File(out) as handle:
        assert handle.attrs["masking"] == "noisy_linear"
    masks, images = read_masks(out, "train"), load_split(out, "train").images
    original = load_split(quadrant_dataset, "train").images[np.arange(0, 200, 2)]
    assert np.array_equal(images[masks], original[masks])
    colour = mask_colour(dataset_info(quadrant_dataset).mean)
    assert not (images[~masks] == colour).all()  # the hole is filled from the image, not the mean colour
    assert not zeroes_masked_pixels(out, "train")
    again, _ = _subset(tmp_path / "again", quadrant_dataset, "bs", masking="noisy_linear", draw=-1)
    assert np.array_equal(load_split(again, "train").images, images)
