"""Dataset kinds ``mnist`` and ``fashion_mnist``: small IDX files written here (plain and gzipped),
torchvision's raw layout, the Debian package's folder, download, samples, and every bad-file message."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import MNIST, FashionMNIST

from pathologies.data import mnist
from pathologies.data.layout import channel_stats, dataset_info, load_split
from pathologies.data.prepare import prepare_dataset, resolve_spec
from pathologies.errors import UserError

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dimensions, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(folder: Path, name: str, array: np.ndarray, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{name}.gz" if gz else name)
    path.write_bytes(gzip.compress(idx_bytes(array)) if gz else idx_bytes(array))
    return path


def fake_arrays(seed: int = 0, n_train: int = 30, n_test: int = 12, shape=(6, 5)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        NAMES[0]: rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        NAMES[2]: rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        NAMES[3]: (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def place(folder: Path, arrays: dict[str, np.ndarray], gz=(True, False, False, True)) -> None:
    for (name, array), zipped in zip(arrays.items(), gz, strict=True):
        write_idx(folder, name, array, zipped)


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Point the Debian folder at an empty place, so the machine's own package cannot leak in."""
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")


def test_options_are_checked():
    spec = resolve_spec("m", {"kind": "mnist"})
    assert spec == {"kind": "mnist", "download": False, "train_sample": None, "test_sample": None, "seed": 0}
    with pytest.raises(UserError, match="option 'train_sample' must be an integer or null"):
        resolve_spec("m", {"kind": "fashion_mnist", "train_sample": 2.5})
    with pytest.raises(UserError, match=r"unknown option\(s\) \['sample'\]"):
        resolve_spec("m", {"kind": "mnist", "sample": 3})


@pytest.mark.parametrize("kind, source", [("mnist", MNIST), ("fashion_mnist", FashionMNIST)])
def test_raw_layout_plain_and_gzipped_files_become_the_shared_layout(kind, source, tmp_path, no_debian):
    arrays = fake_arrays()
    raw = tmp_path / "resources" / kind / source.__name__ / "raw"
    place(raw, arrays)
    out = tmp_path / f"{kind}.h5"
    prepare_dataset(kind, {"kind": kind}, tmp_path / "resources", out)
    info = dataset_info(out)
    assert (info.kind, info.image_shape, info.num_classes) == (kind, (6, 5, 1), 10)
    assert info.class_names == list(source.classes)
    for split, (images, labels) in {"train": NAMES[:2], "test": NAMES[2:]}.items():
        data = load_split(out, split)
        np.testing.assert_array_equal(data.images, arrays[images][..., None])
        np.testing.assert_array_equal(data.labels, arrays[labels])
        np.testing.assert_array_equal(data.ids, np.arange(len(arrays[labels])))
        assert data.labels.dtype == np.int64
    mean, std = channel_stats(arrays[NAMES[0]][..., None])
    np.testing.assert_allclose(info.mean, mean)
    np.testing.assert_allclose(info.std, std)


def test_fashion_mnist_reads_the_debian_folder_and_prefers_resources(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    place(debian, fake_arrays(seed=1), gz=(True, True, True, True))
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST", debian)
    out = tmp_path / "fm.h5"
    prepare_dataset("fm", {"kind": "fashion_mnist"}, tmp_path / "resources", out)
    np.testing.assert_array_equal(load_split(out, "test").images[..., 0], fake_arrays(seed=1)[NAMES[2]])
    place(tmp_path / "resources" / "fashion_mnist" / "FashionMNIST" / "raw", fake_arrays(seed=2))
    prepare_dataset("fm", {"kind": "fashion_mnist"}, tmp_path / "resources", out)
    np.testing.assert_array_equal(load_split(out, "test").images[..., 0], fake_arrays(seed=2)[NAMES[2]])
    # MNIST never looks in the Fashion-MNIST package
    with pytest.raises(UserError, match="no mnist files found"):
        prepare_dataset("m", {"kind": "mnist"}, tmp_path / "resources", tmp_path / "m.h5")


@pytest.mark.parametrize("kind, folder, debian", [
    ("mnist", "mnist/MNIST/raw", False), ("fashion_mnist", "fashion_mnist/FashionMNIST/raw", True)])
def test_missing_files_say_what_to_place_where(kind, folder, debian, tmp_path, no_debian):
    out = tmp_path / "x.h5"
    with pytest.raises(UserError) as err:
        prepare_dataset("x", {"kind": kind}, tmp_path / "resources", out)
    message = str(err.value)
    assert "\n" not in message and f"{tmp_path / 'resources' / folder}/" in message
    assert "t10k-labels-idx1-ubyte[.gz]" in message and "download: true" in message
    assert ("apt" in message or "dataset-fashion-mnist" in message) == debian
    assert not out.exists()


def test_a_half_placed_folder_names_the_missing_files(tmp_path, no_debian):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    arrays = fake_arrays()
    place(raw, arrays)
    (raw / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(UserError, match=r"MNIST/raw/ lacks t10k-images-idx3-ubyte \(plain or .gz\)"):
        prepare_dataset("m", {"kind": "mnist"}, tmp_path, tmp_path / "m.h5")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _wrong_magic(path: Path) -> None:
    path.write_bytes(bytes([0, 0, 8, 2]) + path.read_bytes()[4:])


def _corrupt_gzip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = b"\x00" * (len(data) - len(data) // 2)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, gz, damage, fragment", [
    ("train-images-idx3-ubyte", False, _truncated, "data bytes but its header announces shape"),
    ("t10k-images-idx3-ubyte", True, _truncated, "cannot be read"),
    ("t10k-images-idx3-ubyte", False, _wrong_magic, "is not an IDX file of uint8 with 3 dimension"),
    ("train-images-idx3-ubyte", True, _corrupt_gzip, "cannot be read"),
    ("t10k-labels-idx1-ubyte", True, lambda p: p.write_bytes(b"\x00\x00"), "cannot be read"),
    ("t10k-labels-idx1-ubyte", False, lambda p: p.write_bytes(b"\x00\x00"), "found a file shorter than 4 bytes"),
])
def test_damaged_files_are_one_line_errors_naming_the_file(name, gz, damage, fragment, tmp_path, no_debian):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    place(raw, fake_arrays(), gz=(gz,) * 4)
    path = raw / (f"{name}.gz" if gz else name)
    damage(path)
    out = tmp_path / "m.h5"
    with pytest.raises(UserError) as err:
        prepare_dataset("m", {"kind": "mnist"}, tmp_path, out)
    assert str(path) in str(err.value) and fragment in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_files_that_do_not_belong_together(tmp_path, no_debian):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    arrays = fake_arrays()
    place(raw, {**arrays, NAMES[1]: arrays[NAMES[1]][:-1]})
    with pytest.raises(UserError, match="holds 30 images but .* holds 29 labels"):
        prepare_dataset("m", {"kind": "mnist"}, tmp_path, tmp_path / "m.h5")
    place(raw, {**arrays, NAMES[3]: np.full(12, 10, np.uint8)})
    with pytest.raises(UserError, match="holds label 10; mnist labels lie in 0..9"):
        prepare_dataset("m", {"kind": "mnist"}, tmp_path, tmp_path / "m.h5")
    place(raw, {**arrays, NAMES[2]: np.zeros((12, 5, 5), np.uint8)})
    with pytest.raises(UserError, match="train and test images differ in size"):
        prepare_dataset("m", {"kind": "mnist"}, tmp_path, tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_samples_are_seeded_sorted_and_independent_per_split(tmp_path, no_debian):
    arrays = fake_arrays(n_train=40, n_test=20)
    place(tmp_path / "mnist" / "MNIST" / "raw", arrays)

    def prepared(**options):
        out = tmp_path / "s.h5"
        prepare_dataset("s", {"kind": "mnist", **options}, tmp_path, out)
        return load_split(out, "train"), load_split(out, "test")

    train, test = prepared(train_sample=10, test_sample=5, seed=3)
    assert len(train) == 10 and len(test) == 5 and np.all(np.diff(train.ids) > 0)
    np.testing.assert_array_equal(train.images[..., 0], arrays[NAMES[0]][train.ids])
    np.testing.assert_array_equal(test.labels, arrays[NAMES[3]][test.ids])
    again_train, again_test = prepared(train_sample=10, test_sample=5, seed=3)
    np.testing.assert_array_equal(again_train.ids, train.ids)
    _, same_test = prepared(train_sample=12, test_sample=5, seed=3)
    np.testing.assert_array_equal(same_test.ids, test.ids)
    other, _ = prepared(train_sample=10, seed=4)
    assert not np.array_equal(other.ids, train.ids)
    with pytest.raises(UserError, match=r"option 'test_sample' must lie in 1..20, got 21"):
        prepared(test_sample=21)


def test_download_fetches_into_the_raw_folder(tmp_path, monkeypatch, no_debian):
    """``download: true`` through torchvision, from a local HTTP mirror standing in for the network."""
    mirror = tmp_path / "mirror"
    arrays = fake_arrays(seed=5)
    place(mirror, arrays, gz=(True, True, True, True))
    resources = [(f"{name}.gz", hashlib.md5((mirror / f"{name}.gz").read_bytes()).hexdigest()) for name in NAMES]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
    monkeypatch.setattr(MNIST, "resources", resources)
    out = tmp_path / "m.h5"
    try:
        prepare_dataset("m", {"kind": "mnist", "download": True}, tmp_path / "resources", out)
    finally:
        server.shutdown()
        server.server_close()
    assert (tmp_path / "resources" / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    np.testing.assert_array_equal(load_split(out, "train").images[..., 0], arrays[NAMES[0]])


def test_download_failure_is_a_user_error(tmp_path, monkeypatch, no_debian):
    monkeypatch.setattr(MNIST, "mirrors", [f"{(tmp_path / 'nowhere').as_uri()}/"])
    with pytest.raises(UserError) as err:
        prepare_dataset("m", {"kind": "mnist", "download": True}, tmp_path, tmp_path / "m.h5")
    assert str(err.value).startswith("could not download mnist into") and "\n" not in str(err.value)
    assert "MNIST/raw/" in str(err.value) and not (tmp_path / "m.h5").exists()


@pytest.mark.slow  # reads the 30 MB of gzipped IDX files: ~5 s
@pytest.mark.skipif(not (mnist.DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason=f"Fashion-MNIST is not installed in {mnist.DEBIAN_FASHION_MNIST} "
                           "(apt-get install dataset-fashion-mnist)")
def test_the_real_debian_fashion_mnist(tmp_path):
    out = tmp_path / "fm.h5"
    prepare_dataset("fm", {"kind": "fashion_mnist", "train_sample": 100}, tmp_path, out)
    info = dataset_info(out)
    assert info.image_shape == (28, 28, 1) and info.class_names[0] == "T-shirt/top"
    test = load_split(out, "test")
    assert len(test) == 10_000 and np.bincount(test.labels).tolist() == [1000] * 10


class _Exploit:
    def __reduce__(self):
        import os
        return os.system, ("touch pwned",)


def test_legacy_processed_files_load_without_executing_code(tmp_path, no_debian, monkeypatch):
    import pickle

    import torch

    processed = tmp_path / "fashion_mnist" / "FashionMNIST" / "processed"
    processed.mkdir(parents=True)
    arrays = fake_arrays(seed=7)
    torch.save((torch.from_numpy(arrays[NAMES[0]].copy()), torch.from_numpy(arrays[NAMES[1]].astype(np.int64))),
               processed / "training.pt")
    torch.save((torch.from_numpy(arrays[NAMES[2]].copy()), torch.from_numpy(arrays[NAMES[3]].astype(np.int64))),
               processed / "test.pt")
    out = tmp_path / "fm.h5"
    prepare_dataset("fm", {"kind": "fashion_mnist"}, tmp_path, out)
    np.testing.assert_array_equal(load_split(out, "test").images[..., 0], arrays[NAMES[2]])
    np.testing.assert_array_equal(load_split(out, "train").labels, arrays[NAMES[1]])

    monkeypatch.chdir(tmp_path)
    (processed / "test.pt").write_bytes(pickle.dumps(_Exploit(), protocol=2))
    with pytest.raises(UserError, match=r"test.pt is not a tensor file torch.load can read safely"):
        prepare_dataset("fm", {"kind": "fashion_mnist"}, tmp_path, out)
    assert not (tmp_path / "pwned").exists()
    torch.save({"images": torch.zeros(2, 3, 3, dtype=torch.uint8)}, processed / "test.pt")
    with pytest.raises(UserError, match=r"test.pt must hold \(uint8 images"):
        prepare_dataset("fm", {"kind": "fashion_mnist"}, tmp_path, out)
