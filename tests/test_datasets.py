"""Dataset preparation: every kind from tiny fake sources through the real loaders."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100

from pathologies.data import prepare as datasets
from pathologies.data.imagenet import ImageIndexDataset, load_image
from pathologies.data.layout import Split, channel_stats, dataset_info, load_split, write_dataset
from pathologies.data.prepare import gaussian_class_std, main, prepare_dataset, resolve_spec
from pathologies.errors import UserError
from pathologies.io import h5py, read_json_attr


def read_splits(path: Path) -> dict[str, Split]:
    return {split: load_split(path, split) for split in dataset_info(path).splits}


# ------------------------------------------------------------------------------------ options


def test_resolve_spec_fills_defaults_and_keeps_given_values():
    spec = resolve_spec("d", {"kind": "gaussian", "num_classes": 3})
    assert spec == {**datasets.DEFAULTS["gaussian"], "kind": "gaussian", "num_classes": 3}


def test_resolve_spec_does_not_share_default_lists():
    spec = resolve_spec("c", {"kind": "cifar10c"})
    spec["corruptions"].append("x")
    assert "x" not in datasets.DEFAULTS["cifar10c"]["corruptions"]


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ({"kind": "svhn"}, "unknown kind 'svhn'"),
        ({}, "unknown kind None"),
        ({"kind": "digits", "test_frac": 0.2}, "unknown option(s) ['test_frac']"),
        ({"kind": "digits", "seed": "1"}, "option 'seed' must be an integer"),
        ({"kind": "digits", "seed": True}, "option 'seed' must be an integer"),
        ({"kind": "digits", "seed": -1}, "option 'seed' must be between 0"),
        ({"kind": "cifar10", "download": "yes"}, "option 'download' must be true or false"),
        ({"kind": "cifar10c", "severities": [1, "2"]}, "option 'severities' must be a list"),
        ({"kind": "cifar10c", "sample": 2.5}, "option 'sample' must be an integer or null"),
    ],
)
def test_bad_specs_are_user_errors(spec, fragment):
    with pytest.raises(UserError) as err:
        resolve_spec("mine", spec)
    assert fragment in str(err.value) and "'mine'" in str(err.value)


def test_numbers_accept_integers_for_float_options():
    assert resolve_spec("g", {"kind": "gaussian", "std_step": 2})["std_step"] == 2


# ------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "digits.h5"
    prepare_dataset("digits", {"kind": "digits"}, Path("unused"), out)
    return out


def test_digits_split_shapes_scaling_and_ids(digits_file):
    from sklearn.datasets import load_digits

    source = load_digits()
    splits = read_splits(digits_file)
    assert set(splits) == {"train", "test"}
    train, test = splits["train"], splits["test"]
    assert train.images.shape[1:] == (8, 8, 1) and train.images.dtype == np.uint8
    assert len(test) == int(np.ceil(0.25 * len(source.target)))
    assert set(train.ids).isdisjoint(test.ids)
    assert sorted(np.concatenate([train.ids, test.ids])) == list(range(len(source.target)))
    for split in (train, test):
        np.testing.assert_array_equal(split.images[..., 0], np.round(source.images[split.ids] * 255 / 16))
        np.testing.assert_array_equal(split.labels, source.target[split.ids])
    assert train.images.max() == 255 and train.images.min() == 0
    info = dataset_info(digits_file)
    assert info.class_names == [str(d) for d in range(10)] and info.num_classes == 10
    mean, std = channel_stats(train.images)
    np.testing.assert_allclose(info.mean, mean)
    np.testing.assert_allclose(info.std, std)


def test_digits_split_is_stratified(digits_file):
    splits = read_splits(digits_file)
    for label in range(10):
        in_test = (splits["test"].labels == label).sum()
        total = in_test + (splits["train"].labels == label).sum()
        assert abs(in_test - 0.25 * total) <= 1


def test_digits_split_is_deterministic_and_seeded(digits_file, tmp_path):
    again, other = tmp_path / "again.h5", tmp_path / "other.h5"
    prepare_dataset("digits", {"kind": "digits", "seed": 0}, tmp_path, again)
    prepare_dataset("digits", {"kind": "digits", "seed": 1}, tmp_path, other)
    np.testing.assert_array_equal(load_split(again, "test").ids, load_split(digits_file, "test").ids)
    assert not np.array_equal(load_split(other, "test").ids, load_split(digits_file, "test").ids)


def test_digits_rejects_impossible_test_fraction(tmp_path):
    for fraction in (0.0, 1.0, 0.001):
        with pytest.raises(UserError, match="test_fraction"):
            prepare_dataset("d", {"kind": "digits", "test_fraction": fraction}, tmp_path, tmp_path / "d.h5")
    assert not (tmp_path / "d.h5").exists()


# ----------------------------------------------------------------------------------- gaussian


def test_gaussian_class_std_follows_paper():
    np.testing.assert_array_equal(gaussian_class_std({"num_classes": 4, "std_step": 2.5}), [2.5, 5, 7.5, 10])
    assert len(gaussian_class_std({})) == 10


def test_gaussian_empirical_statistics_match_nominal(tmp_path):
    spec = {"kind": "gaussian", "num_classes": 5, "std_step": 4.0, "image_size": 16, "train_per_class": 20,
            "test_per_class": 2, "mean": 100.0}
    out = tmp_path / "g.h5"
    prepare_dataset("g", spec, tmp_path, out)
    train = load_split(out, "train")
    assert train.images.shape == (100, 16, 16, 3)
    assert not np.all(np.diff(train.labels) >= 0), "images must be shuffled"
    for label, nominal in enumerate(gaussian_class_std(spec)):
        pixels = train.images[train.labels == label].astype(np.float64)
        assert len(pixels) == 20
        # 15,360 values per class: the std's standard error is ~0.6 %.
        assert abs(pixels.std() / nominal - 1) < 0.03
        assert abs(pixels.mean() - 100.0) < 0.5
    np.testing.assert_array_equal(load_split(out, "test").ids, np.arange(10))


def test_gaussian_class_names_sort_in_class_order(tmp_path):
    out = tmp_path / "g.h5"
    prepare_dataset("g", {"kind": "gaussian", "num_classes": 100, "image_size": 1, "train_per_class": 1,
                          "test_per_class": 1}, tmp_path, out)
    names = dataset_info(out).class_names
    assert names[0] == "001" and names[-1] == "100" and len(names) == 100
    assert sorted(names) == names


def test_gaussian_is_seeded(tmp_path):
    def build(name, **options):
        out = tmp_path / f"{name}.h5"
        spec = {"kind": "gaussian", "num_classes": 3, "image_size": 4, "train_per_class": 5, "test_per_class": 4}
        prepare_dataset(name, {**spec, **options}, tmp_path, out)
        return read_splits(out)

    first, same, other, more_train = build("a"), build("b"), build("c", seed=1), build("d", train_per_class=7)
    for split in ("train", "test"):
        np.testing.assert_array_equal(first[split].images, same[split].images)
        np.testing.assert_array_equal(first[split].labels, same[split].labels)
        assert not np.array_equal(first[split].images, other[split].images)
    # Each split has its own random stream: more train images leave the test set unchanged.
    np.testing.assert_array_equal(first["test"].images, more_train["test"].images)


def test_gaussian_rejects_non_positive_counts(tmp_path):
    with pytest.raises(UserError, match="'train_per_class' must be positive"):
        prepare_dataset("g", {"kind": "gaussian", "train_per_class": 0}, tmp_path, tmp_path / "g.h5")


# ------------------------------------------------------------------------------ cifar10/cifar100


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _rows(images: np.ndarray) -> np.ndarray:
    """HWC images -> the CIFAR pickle's rows of channel planes."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _fake_images(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)


def _point_checksums_at(monkeypatch, source: type, folder: Path) -> None:
    """Replace torchvision's MD5s by those of the fake files so its integrity checks pass for them."""
    monkeypatch.setattr(source, "train_list", [[name, _md5(folder / name)] for name, _ in source.train_list])
    monkeypatch.setattr(source, "test_list", [[name, _md5(folder / name)] for name, _ in source.test_list])
    monkeypatch.setattr(source, "meta", {**source.meta, "md5": _md5(folder / source.meta["filename"])})


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """resources/cifar10/cifar-10-batches-py in the real pickle format, 3 images per batch."""
    folder = tmp_path / "resources" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images, labels = _fake_images(rng, 3), [int(v) for v in rng.integers(0, 10, 3)]
        _pickle(folder / name, {"batch_label": name, "labels": labels, "data": _rows(images),
                                "filenames": [f"{name}_{i}.png" for i in range(3)]})
        batches[name] = (images, labels)
    _pickle(folder / "batches.meta", {"label_names": list(datasets.CIFAR10_CLASSES), "num_cases_per_batch": 3,
                                      "num_vis": 3072})
    _point_checksums_at(monkeypatch, CIFAR10, folder)
    return tmp_path / "resources", batches


def test_cifar10_through_torchvision(fake_cifar10, tmp_path):
    resources, batches = fake_cifar10
    out = tmp_path / "cifar10.h5"
    prepare_dataset("cifar10", {"kind": "cifar10"}, resources, out)
    splits = read_splits(out)
    train_images = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(splits["train"].images, train_images)
    np.testing.assert_array_equal(splits["train"].labels, sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), []))
    np.testing.assert_array_equal(splits["train"].ids, np.arange(15))
    np.testing.assert_array_equal(splits["test"].images, batches["test_batch"][0])
    info = dataset_info(out)
    assert info.class_names == list(datasets.CIFAR10_CLASSES) and info.image_shape == (32, 32, 3)
    np.testing.assert_allclose(info.mean, channel_stats(train_images)[0])


def test_cifar10_extracts_a_placed_archive(fake_cifar10, tmp_path, monkeypatch):
    resources, _ = fake_cifar10
    root = resources / "cifar10"
    archive = root / CIFAR10.filename
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / CIFAR10.base_folder, arcname=CIFAR10.base_folder)
    for path in (root / CIFAR10.base_folder).iterdir():
        path.unlink()
    (root / CIFAR10.base_folder).rmdir()
    monkeypatch.setattr(CIFAR10, "tgz_md5", _md5(archive))
    prepare_dataset("cifar10", {"kind": "cifar10"}, resources, tmp_path / "c.h5")
    assert len(load_split(tmp_path / "c.h5", "test")) == 3


def test_cifar10_missing_or_corrupt_files_name_the_path(fake_cifar10, tmp_path):
    resources, _ = fake_cifar10
    folder = resources / "cifar10" / "cifar-10-batches-py"
    original = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(original + b"x")
    with pytest.raises(UserError, match=f"{folder / 'data_batch_2'} fails its MD5 check"):
        prepare_dataset("c", {"kind": "cifar10"}, resources, tmp_path / "c.h5")
    (folder / "data_batch_2").write_bytes(original)
    (folder / "test_batch").unlink()
    with pytest.raises(UserError, match=f"{folder / 'test_batch'} is missing"):
        prepare_dataset("c", {"kind": "cifar10"}, resources, tmp_path / "c.h5")
    expected = r"place cifar-10-python.tar.gz or the extracted cifar-10-batches-py/ under .*/cifar10/"
    with pytest.raises(UserError, match=expected):
        prepare_dataset("c", {"kind": "cifar10"}, tmp_path / "empty", tmp_path / "c.h5")
    assert not (tmp_path / "c.h5").exists()


def test_cifar10_download_failure_is_a_user_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils

    def offline(url, root, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(UserError, match="could not download .*cifar-10-python.tar.gz .*no network"):
        prepare_dataset("c", {"kind": "cifar10", "download": True}, tmp_path, tmp_path / "c.h5")


def test_cifar100_through_torchvision(tmp_path, monkeypatch):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    content = {}
    for name, count in (("train", 4), ("test", 2)):
        images, fine = _fake_images(rng, count), [int(v) for v in rng.integers(0, 100, count)]
        _pickle(folder / name, {"filenames": [f"{i}.png" for i in range(count)], "batch_label": name,
                                "fine_labels": fine, "coarse_labels": [v // 5 for v in fine], "data": _rows(images)})
        content[name] = (images, fine)
    names = [f"class{i:02d}" for i in range(100)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]})
    _point_checksums_at(monkeypatch, CIFAR100, folder)
    out = tmp_path / "c100.h5"
    prepare_dataset("c100", {"kind": "cifar100"}, tmp_path, out)
    for split, (images, fine) in content.items():
        loaded = load_split(out, split)
        np.testing.assert_array_equal(loaded.images, images)
        np.testing.assert_array_equal(loaded.labels, fine)
    assert dataset_info(out).class_names == names


# ---------------------------------------------------------------------- cifar10c and cifar10.1


@pytest.fixture
def fake_cifar10c(tmp_path) -> Path:
    """CIFAR-10-C layout with 4 images per severity; severity s is filled with the value s."""
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    labels = np.tile(np.array([3, 1, 4, 1], dtype=np.uint8), 5)
    np.save(folder / "labels.npy", labels)
    for offset, corruption in enumerate(("fog", "snow")):
        images = np.repeat(np.arange(1, 6, dtype=np.uint8), 4)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)
        images[:, 0, 0, 0] = np.tile(np.arange(4), 5) + 10 * offset  # which base image, per corruption
        np.save(folder / f"{corruption}.npy", images)
    return tmp_path


def test_cifar10c_splits_ids_and_constant_stats(fake_cifar10c, tmp_path):
    out = tmp_path / "c.h5"
    prepare_dataset("c", {"kind": "cifar10c", "corruptions": ["fog", "snow"], "severities": [2, 5]}, fake_cifar10c, out)
    splits = read_splits(out)
    assert set(splits) == {"fog_s2", "fog_s5", "snow_s2", "snow_s5"}
    np.testing.assert_array_equal(splits["snow_s5"].images[:, 1, 1, 1], [5, 5, 5, 5])
    np.testing.assert_array_equal(splits["snow_s5"].images[:, 0, 0, 0], [10, 11, 12, 13])
    np.testing.assert_array_equal(splits["fog_s2"].labels, [3, 1, 4, 1])
    np.testing.assert_array_equal(splits["fog_s2"].ids, np.arange(4))
    info = dataset_info(out)
    np.testing.assert_allclose(info.mean, datasets.CIFAR10_TRAIN_MEAN)
    np.testing.assert_allclose(info.std, datasets.CIFAR10_TRAIN_STD)
    with h5py.File(out, "r") as handle:
        assert read_json_attr(handle, "spec")["severities"] == [2, 5]


def test_cifar10c_sample_is_shared_and_seeded(fake_cifar10c, tmp_path):
    def sampled(seed):
        out = tmp_path / f"s{seed}.h5"
        prepare_dataset("c", {"kind": "cifar10c", "corruptions": ["fog", "snow"], "sample": 2, "seed": seed},
                        fake_cifar10c, out)
        return read_splits(out)

    splits = sampled(0)
    ids = splits["fog_s1"].ids
    assert len(ids) == 2 and len(set(ids)) == 2
    for split in splits.values():
        np.testing.assert_array_equal(split.ids, ids)
        np.testing.assert_array_equal(split.images[:, 0, 0, 0] % 10, ids)
        np.testing.assert_array_equal(split.labels, np.array([3, 1, 4, 1])[ids])
    assert any(not np.array_equal(sampled(seed)["fog_s1"].ids, ids) for seed in range(1, 6))


def test_cifar10c_mixed_sample_spans_corruptions_and_severities(fake_cifar10c, tmp_path):
    def mixed(seed, n=12):
        out = tmp_path / f"m{seed}_{n}.h5"
        prepare_dataset("c", {"kind": "cifar10c", "corruptions": ["fog", "snow"], "severities": [2, 5],
                              "mixed_sample": n, "seed": seed}, fake_cifar10c, out)
        return read_splits(out)

    splits = mixed(0)
    sample = splits[datasets.MIXED_SPLIT]
    assert len(sample.ids) == 12 and len(set(sample.ids.tolist())) == 12
    known = datasets.CIFAR10C_CORRUPTIONS + datasets.CIFAR10C_EXTRA_CORRUPTIONS
    for image, label, image_id in zip(sample.images, sample.labels, sample.ids, strict=True):
        code, index = divmod(int(image_id), 4)
        corruption, severity = known[code // 5], code % 5 + 1
        assert corruption in ("fog", "snow") and severity in (2, 5)
        # the very image of that corruption, severity and index
        np.testing.assert_array_equal(image, splits[f"{corruption}_s{severity}"].images[index])
        assert label == [3, 1, 4, 1][index]
    drawn = {divmod(int(i), 4)[0] for i in sample.ids}
    assert len(drawn) == 4  # 12 of 16 images: every (corruption, severity) pair is drawn
    np.testing.assert_array_equal(mixed(0)[datasets.MIXED_SPLIT].ids, sample.ids)  # seeded
    assert any(not np.array_equal(mixed(seed, 5)[datasets.MIXED_SPLIT].ids, mixed(0, 5)[datasets.MIXED_SPLIT].ids)
               for seed in range(1, 6))
    with pytest.raises(UserError, match="mixed_sample' must lie in 1..16"):
        mixed(0, 17)


# Carter et al.'s additional_datasets.CIFAR10C.get_corruptions(), written out here (alphabetical)
REFERENCE_CORRUPTIONS = [
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_blur",
    "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate", "saturate",
    "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
]


def test_cifar10c_reference_mixed_draw_selects_the_papers_images_in_its_order(tmp_path):
    """mixed_draw: reference == the reference's draw over 19 files concatenated alphabetically (same ids, order)."""
    per_severity = 3
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    labels = np.tile(np.array([7, 2, 9], dtype=np.uint8), 5)
    np.save(folder / "labels.npy", labels)
    files = {}
    for c, corruption in enumerate(REFERENCE_CORRUPTIONS):
        images = np.random.default_rng(c).integers(0, 256, size=(5 * per_severity, 32, 32, 3), dtype=np.uint8)
        np.save(folder / f"{corruption}.npy", images)
        files[corruption] = images
    # the reference: np.concatenate in get_corruptions() order, np.random.seed(1234), np.random.choice
    data = np.concatenate([files[c] for c in REFERENCE_CORRUPTIONS])
    targets = np.concatenate([labels] * len(REFERENCE_CORRUPTIONS))
    np.random.seed(1234)
    idxs = np.random.choice(data.shape[0], size=40, replace=False)
    out = tmp_path / "c.h5"  # the listed corruptions and severities (their own splits) do not matter
    prepare_dataset("c", {"kind": "cifar10c", "corruptions": ["snow", "fog"], "severities": [2], "mixed_sample": 40,
                          "seed": 1234, "mixed_draw": "reference"}, tmp_path, out)
    assert set(read_splits(out)) == {"snow_s2", "fog_s2", datasets.MIXED_SPLIT}
    sample = read_splits(out)[datasets.MIXED_SPLIT]
    np.testing.assert_array_equal(sample.images, data[idxs])
    np.testing.assert_array_equal(sample.labels, targets[idxs])
    known = datasets.CIFAR10C_CORRUPTIONS + datasets.CIFAR10C_EXTRA_CORRUPTIONS
    per_corruption = 5 * per_severity
    expected_ids = [(known.index(REFERENCE_CORRUPTIONS[i // per_corruption]) * 5 + (i % per_corruption)
                     // per_severity) * per_severity + i % per_severity for i in idxs]
    np.testing.assert_array_equal(sample.ids, expected_ids)
    assert not np.array_equal(np.sort(idxs), idxs)  # draw order kept, not sorted
    with pytest.raises(UserError, match="mixed_sample' must lie in 1..285"):
        prepare_dataset("c", {"kind": "cifar10c", "mixed_sample": 286, "mixed_draw": "reference"}, tmp_path,
                        tmp_path / "d.h5")


def test_config_checks_know_the_cifar10c_splits_prepare_writes(fake_cifar10c, tmp_path):
    """`mixed` included, so an SIS run on it passes the checks made before any job (experiments.check_inputs)."""
    from pathologies.data.splits import expected_splits

    spec = resolve_spec("c", {"kind": "cifar10c", "corruptions": ["fog", "snow"], "severities": [2, 5],
                              "mixed_sample": 3})
    prepare_dataset("c", spec, fake_cifar10c, tmp_path / "c.h5")
    written = read_splits(tmp_path / "c.h5")
    expected = expected_splits(spec)
    assert set(expected) == set(written) == {"fog_s2", "fog_s5", "snow_s2", "snow_s5", datasets.MIXED_SPLIT}
    assert expected[datasets.MIXED_SPLIT] == len(written[datasets.MIXED_SPLIT].ids) == 3
    assert datasets.MIXED_SPLIT not in expected_splits({**spec, "mixed_sample": None})
    defaults = expected_splits({"kind": "cifar10c", "mixed_sample": 5})  # unlisted: prepare's defaults
    assert len(defaults) == 15 * 5 + 1 and "jpeg_compression_s5" in defaults and "saturate_s1" not in defaults


def test_cifar10c_stats_from_a_prepared_cifar10(fake_cifar10c, tmp_path):
    stats = tmp_path / "cifar10.h5"
    train = Split(images=np.full((2, 32, 32, 3), 51, np.uint8), labels=np.zeros(2), ids=np.arange(2))
    write_dataset(stats, name="cifar10", kind="cifar10", splits={"train": train}, class_names=list("ab"))
    out = tmp_path / "c.h5"
    prepare_dataset("c", {"kind": "cifar10c", "corruptions": ["fog"], "stats_from": str(stats)}, fake_cifar10c, out)
    np.testing.assert_allclose(dataset_info(out).mean, [0.2, 0.2, 0.2])
    digits = tmp_path / "digits.h5"
    write_dataset(digits, name="d", kind="digits", splits={"train": train}, class_names=list("ab"))
    with pytest.raises(UserError, match="is a 'digits' dataset"):
        prepare_dataset("c", {"kind": "cifar10c", "corruptions": ["fog"], "stats_from": str(digits)},
                        fake_cifar10c, out)


def test_cifar10c_errors_name_the_file(fake_cifar10c, tmp_path):
    out = tmp_path / "c.h5"
    with pytest.raises(UserError, match=f"{fake_cifar10c / 'CIFAR-10-C' / 'gaussian_noise.npy'} is missing"):
        prepare_dataset("c", {"kind": "cifar10c"}, fake_cifar10c, out)
    with pytest.raises(UserError, match="'corruptions' must be a non-empty list"):
        prepare_dataset("c", {"kind": "cifar10c", "corruptions": ["fogg"]}, fake_cifar10c, out)
    with pytest.raises(UserError, match="'severities' must be a non-empty list"):
        prepare_dataset("c", {"kind": "cifar10c", "corruptions": ["fog"], "severities": [6]}, fake_cifar10c, out)
    with pytest.raises(UserError, match=r"'sample' must lie in 1\.\.4"):
        prepare_dataset("c", {"kind": "cifar10c", "corruptions": ["fog"], "sample": 5}, fake_cifar10c, out)
    np.save(fake_cifar10c / "CIFAR-10-C" / "labels.npy", np.arange(20) % 10)
    with pytest.raises(UserError, match="same labels for every severity"):
        prepare_dataset("c", {"kind": "cifar10c", "corruptions": ["fog"]}, fake_cifar10c, out)
    with pytest.raises(UserError, match="labels.npy is missing"):
        prepare_dataset("c", {"kind": "cifar10c"}, tmp_path / "nothing", out)
    assert not out.exists()


def test_cifar10_1(tmp_path):
    folder = tmp_path / "CIFAR-10.1"
    folder.mkdir()
    images = _fake_images(np.random.default_rng(2), 6)
    np.save(folder / "cifar10.1_v6_data.npy", images)
    np.save(folder / "cifar10.1_v6_labels.npy", np.array([0, 9, 2, 3, 4, 5]))
    out = tmp_path / "c101.h5"
    prepare_dataset("c101", {"kind": "cifar10.1"}, tmp_path, out)
    test = load_split(out, "test")
    np.testing.assert_array_equal(test.images, images)
    np.testing.assert_array_equal(test.labels, [0, 9, 2, 3, 4, 5])
    assert dataset_info(out).splits == ("test",)
    with pytest.raises(UserError, match=f"{folder / 'cifar10.1_v4_labels.npy'} is missing"):
        prepare_dataset("c101", {"kind": "cifar10.1", "version": "v4"}, tmp_path, tmp_path / "v4.h5")
    np.save(folder / "cifar10.1_v6_labels.npy", np.array([0, 1]))
    with pytest.raises(UserError, match="holds 6 images but its labels file has 2"):
        prepare_dataset("c101", {"kind": "cifar10.1"}, tmp_path, out)


# ----------------------------------------------------------------------------------- imagenet

COLOURS = {"n01": [(255, 0, 0), (255, 0, 0), (0, 0, 255)], "n02": [(0, 255, 0), (30, 60, 90), (0, 0, 0)]}


@pytest.fixture
def fake_imagenet(tmp_path) -> Path:
    """resources/imagenet/{train,val}/<wnid>/ with tiny single-colour PNGs of assorted sizes."""
    root = tmp_path / "resources" / "imagenet"
    for wnid, colours in COLOURS.items():
        for i, colour in enumerate(colours):
            (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12 + 3 * i, 10 + i), colour).save(root / "train" / wnid / f"img{i}.png")
        (root / "val" / wnid).mkdir(parents=True)
        Image.new("L", (11, 14), 77).save(root / "val" / wnid / "val.png")  # grayscale: converted to RGB
    (root / "train" / "n01" / "notes.txt").write_text("not an image")
    return tmp_path / "resources"


def test_imagenet_index_and_streaming(fake_imagenet, tmp_path, monkeypatch):
    out = tmp_path / "results" / "imagenet.h5"
    prepare_dataset("imagenet", {"kind": "imagenet", "image_size": 6, "resize": 8}, fake_imagenet, out)
    info = dataset_info(out)
    assert info.storage == "index" and info.image_shape == (6, 6, 3) and info.class_names == ["n01", "n02"]
    np.testing.assert_allclose(info.mean, datasets.IMAGENET_MEAN)
    with h5py.File(out, "r") as handle:
        assert list(handle["train"]["paths"].asstr()[()]) == [
            f"train/{wnid}/img{i}.png" for wnid in ("n01", "n02") for i in range(3)]
        np.testing.assert_array_equal(handle["train"]["labels"][()], [0, 0, 0, 1, 1, 1])
        np.testing.assert_array_equal(handle["test"]["ids"][()], [0, 1])
    with pytest.raises(UserError, match="stores image paths only"):
        load_split(out, "train")

    train = ImageIndexDataset(out, "train")
    assert len(train) == 6
    image, label = train[4]
    assert image.dtype == torch.uint8 and image.shape == (6, 6, 3) and label == 1
    assert (image == torch.tensor([30, 60, 90], dtype=torch.uint8)).all()
    images, labels = next(iter(torch.utils.data.DataLoader(ImageIndexDataset(out, "test"), batch_size=2)))
    assert images.shape == (2, 6, 6, 3) and (images == 77).all() and labels.tolist() == [0, 1]

    monkeypatch.chdir(tmp_path)  # a relative image root resolves against the working directory
    prepare_dataset("rel", {"kind": "imagenet", "image_size": 6, "resize": 8}, Path("resources"), Path("rel.h5"))
    assert ImageIndexDataset("rel.h5", "test")[0][1] == 0
    (fake_imagenet / "imagenet" / "val" / "n02" / "val.png").unlink()
    with pytest.raises(UserError, match="val.png listed in the ImageNet index is missing"):
        ImageIndexDataset("rel.h5", "test")[1]


def test_load_image_resizes_shorter_side_then_crops_centre(tmp_path):
    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:, 3:5] = 200  # the two centre columns of a 8-wide, 4-high image
    Image.fromarray(pixels).save(tmp_path / "stripe.png")
    cropped = load_image(tmp_path / "stripe.png", resize=4, image_size=2)
    assert cropped.shape == (2, 2, 3) and (cropped == 200).all()


def test_imagenet_stats_sample(fake_imagenet, tmp_path):
    out = tmp_path / "imagenet.h5"
    prepare_dataset("i", {"kind": "imagenet", "image_size": 4, "resize": 4, "stats_sample": 6}, fake_imagenet, out)
    colours = np.array([c for wnid in COLOURS for c in COLOURS[wnid]], dtype=np.float64) / 255
    info = dataset_info(out)
    np.testing.assert_allclose(info.mean, colours.mean(axis=0))
    np.testing.assert_allclose(info.std, colours.std(axis=0), atol=1e-7)
    with pytest.raises(UserError, match="stats_sample must be between 1 and the 6 train images"):
        prepare_dataset("i", {"kind": "imagenet", "stats_sample": 7}, fake_imagenet, out)


def test_imagenet_errors(fake_imagenet, tmp_path):
    out = tmp_path / "i.h5"
    with pytest.raises(UserError, match="resize .* must be at least image_size"):
        prepare_dataset("i", {"kind": "imagenet", "image_size": 9, "resize": 8}, fake_imagenet, out)
    with pytest.raises(UserError, match=f"{tmp_path / 'none' / 'imagenet' / 'train'}/ is missing"):
        prepare_dataset("i", {"kind": "imagenet"}, tmp_path / "none", out)
    (fake_imagenet / "imagenet" / "val" / "n03").mkdir()
    with pytest.raises(UserError, match=r"must contain the same class folders; they differ in \['n03'\]"):
        prepare_dataset("i", {"kind": "imagenet"}, fake_imagenet, out)
    (fake_imagenet / "imagenet" / "val" / "n03").rmdir()
    (fake_imagenet / "imagenet" / "val" / "n02" / "val.png").unlink()
    with pytest.raises(UserError, match="Found no valid file for the classes n02"):
        prepare_dataset("i", {"kind": "imagenet"}, fake_imagenet, out)
    assert not out.exists()


# ---------------------------------------------------------------------------------------- CLI


def test_cli_writes_the_file(tmp_path):
    out = tmp_path / "data" / "g.h5"
    spec = {"kind": "gaussian", "num_classes": 2, "image_size": 2, "train_per_class": 3, "test_per_class": 1}
    assert main(["--name", "g", "--spec", json.dumps(spec), "--resources", str(tmp_path), "--out", str(out)]) == 0
    assert dataset_info(out).name == "g" and len(load_split(out, "train")) == 6
    assert [p.name for p in out.parent.iterdir()] == ["g.h5"]


@pytest.mark.parametrize("spec_json", ['{"kind": "digits",', '{"kind": "digits", "sed": 1}'])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, spec_json):
    with pytest.raises(SystemExit) as exit_info:
        main(["--name", "d", "--spec", spec_json, "--out", str(tmp_path / "d.h5")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "d.h5").exists()


@pytest.mark.slow  # a fresh interpreter importing torch: ~5 s
def test_cli_as_module_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pathologies.data.prepare", "--name", "c", "--spec", '{"kind": "cifar10"}',
         "--resources", str(tmp_path), "--out", str(tmp_path / "c.h5")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cifar-10-python.tar.gz" in result.stderr
    assert not (tmp_path / "c.h5").exists()
