"""Block-order SIS files (pathologies.sis.orders): Batched Gradient files store /order in the narrowest id type
with ``order_format = "block"``; every reader gives what it gives for the old full-order (int32) file of the same
selection, streamed readers give what whole reads give, and sharded block files merge into the unsharded file.

A small CNN trained on 18x18 quadrant images (p = 324 features: uint16 ids) explains 12 test images with
Batched Gradient SIS, k = 10 (33 steps, the last one of 4 features).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_imagenet_index, make_quadrant_dataset, make_spec
from overinterp_fixtures import save_untrained_model
from pathologies.errors import UserError
from pathologies.io import COMPRESSION, h5py
from pathologies.overinterp import index_subsets
from pathologies.overinterp.human_benchmark import benchmark_items
from pathologies.overinterp.sis_sizes import read_sis_sizes
from pathologies.overinterp.subset_masks import SubsetRequest
from pathologies.overinterp.subsets import build_subset_datasets, read_sis_orders
from pathologies.sis import orders
from pathologies.sis.extract import run as extract
from pathologies.sis.figures import plot_curves, plot_examples, removal_step_map
from pathologies.sis.figures import plot_examples_by_class as plot_overinterp_examples
from pathologies.sis.heatmaps import heatmap_panels, plot_heatmaps, read_heatmaps, removal_rank
from pathologies.sis.heatmaps import plot as plot_sis_heatmaps
from pathologies.sis.merge import merge_shards
from pathologies.training.train import train_run
from test_sis_extract import read_all, sis_spec

SIZE = 18
P = SIZE * SIZE
BLOCK = 10
THRESHOLDS = [0.5, 0.9]


def gradient_spec(**run) -> dict:
    return sis_spec(method="gradient", block=BLOCK, thresholds=THRESHOLDS, **run)


def as_full_file(block_path: Path, out: Path) -> Path:
    """The file the code before the block layout wrote for the same selection: int32 /order, no attribute."""
    shutil.copyfile(block_path, out)
    with h5py.File(out, "a") as handle:
        order = handle["order"][()]
        del handle["order"]
        handle.create_dataset("order", data=order.astype(np.int32), compression="gzip", compression_opts=4,
                              shuffle=True)
        del handle.attrs["order_format"]
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(dataset, model, block file, full file) of one Batched Gradient selection of 12 test images."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("block_order")
    dataset = make_quadrant_dataset(folder / "quadrants.h5", n_train=256, n_test=12, size=SIZE)
    train_run(make_spec(epochs=8), dataset, model_out=folder / "model.pt", log_out=folder / "log.csv",
              predictions_out=folder / "predictions.h5", state_dir=folder / "state", device="cpu", progress=False)
    block = folder / "block.h5"
    extract([folder / "model.pt"], dataset, gradient_spec(), out=block, device="cpu")
    return dataset, folder / "model.pt", block, as_full_file(block, folder / "full.h5")


def test_gradient_files_store_the_block_layout_and_exact_files_stay_full(files, tmp_path):
    dataset, model, block, full = files
    with h5py.File(block) as b, h5py.File(full) as f:
        assert b.attrs["order_format"] == "block" and "order_format" not in f.attrs
        assert b["order"].dtype == np.uint16 and f["order"].dtype == np.int32
        order = orders.read_orders(b)
        assert order.dtype == np.int64 and order.shape == (12, P)
        np.testing.assert_array_equal(order, f["order"][()])
        assert all(sorted(row) == list(range(P)) for row in order)  # a full permutation per image
        np.testing.assert_array_equal(b["steps"][0][-2:], [320, 324])
    extract([model], dataset, sis_spec(thresholds=[0.9], sample=1), out=tmp_path / "exact.h5", device="cpu")
    with h5py.File(tmp_path / "exact.h5") as handle:  # exact SIS: the layout of before, unchanged
        assert "order_format" not in handle.attrs and handle["order"].dtype == np.int32
    assert [orders.order_dtype(p) for p in (196, 256, 257, 50176, 65536, 65537)] == \
        [np.uint8, np.uint8, np.uint16, np.uint16, np.uint16, np.int32]


def test_every_reader_gives_the_same_result_for_block_and_full_files(files, tmp_path):
    dataset, _, block, full = files
    with h5py.File(block) as handle:
        none = handle["sis/0.5/none"][()]
    assert (~none).sum() >= 3  # real SIS to compare
    for key, value in read_heatmaps([block], 0.1).items():
        expected = read_heatmaps([full], 0.1)[key]
        if isinstance(value, dict):
            assert value.keys() == expected.keys()
            for tau in value:
                np.testing.assert_array_equal(value[tau], expected[tau])
        else:
            np.testing.assert_array_equal(value, expected)
    pairs = zip(heatmap_panels(block, [], 0.5), heatmap_panels(full, [], 0.5), strict=True)
    for (title, value), (other, expected) in pairs:
        assert title == other
        np.testing.assert_array_equal(value, expected)
    np.testing.assert_array_equal(read_sis_orders(block).order, read_sis_orders(full).order)
    sizes_block, sizes_full = read_sis_sizes(block), read_sis_sizes(full)
    for tau in THRESHOLDS:
        np.testing.assert_array_equal(sizes_block.size_pct[tau], sizes_full.size_pct[tau])
    # subsets cut inside a block (10% of 324 = 32 features: 3 blocks and 2 of the next): same masks
    for path in (block, full):
        build_subset_datasets(dataset, {"test": path}, [
            SubsetRequest("bs", 0.1, -1, "bs", str(tmp_path / f"bs_{path.stem}.h5")),
            SubsetRequest("bs", 0.5, -1, "bs", str(tmp_path / f"half_{path.stem}.h5"))])
    for name in ("bs", "half"):
        with h5py.File(tmp_path / f"{name}_block.h5") as b, h5py.File(tmp_path / f"{name}_full.h5") as f:
            np.testing.assert_array_equal(b["test/masks"][()], f["test/masks"][()])
            np.testing.assert_array_equal(b["test/images"][()], f["test/images"][()])
    items_block = benchmark_items(block, [0.1, 0.3], images=5, seed=2)
    items_full = benchmark_items(full, [0.1, 0.3], images=5, seed=2)
    assert (items_block["source"] == str(block)).all()  # the file name names the source: it differs
    assert items_block.drop(columns=["image", "source"]).equals(items_full.drop(columns=["image", "source"]))
    assert all(np.array_equal(a, b) for a, b in zip(items_block["image"], items_full["image"], strict=True))
    order = orders.read_orders(h5py.File(block))
    np.testing.assert_array_equal(removal_rank(order, 1, SIZE, SIZE), heatmap_panels(full, [], 0.5)[-1][1])
    step = removal_step_map(order[0], 1, BLOCK, SIZE, SIZE)
    assert step.max() == 32 and (step == 32).sum() == 4
    for path in (block, full):  # the figure modules read both
        plot_examples(path, tmp_path / f"ex_{path.stem}.png", images=2)
        plot_curves([path], tmp_path / f"curves_{path.stem}.png")
        plot_overinterp_examples(path, 0.5, 1, 0, tmp_path / f"ox_{path.stem}.png")


def test_streamed_readers_equal_whole_reads(files, monkeypatch, tmp_path):
    dataset, _, block, full = files
    build_subset_datasets(dataset, {"test": full}, [SubsetRequest("bs", 0.1, -1, "bs", str(tmp_path / "bs.h5"))])
    whole_maps, whole_panels = read_heatmaps([block, full], 0.05), heatmap_panels(block, [tmp_path / "bs.h5"], 0.9)
    plot_heatmaps(block, [tmp_path / "bs.h5"], 0.9, tmp_path / "whole.png")
    plot_sis_heatmaps({"a": [block], "b": [full]}, 0.05, tmp_path / "whole_sis.png")
    for chunk in (1, 5):
        monkeypatch.setattr(orders, "CHUNK", chunk)
        plot_heatmaps(block, [tmp_path / "bs.h5"], 0.9, tmp_path / "chunked.png")
        plot_sis_heatmaps({"a": [block], "b": [full]}, 0.05, tmp_path / "chunked_sis.png")
        for name in ("", "_sis"):  # the same figures, byte for byte
            assert (tmp_path / f"chunked{name}.png").read_bytes() == (tmp_path / f"whole{name}.png").read_bytes()
        assert len(list(orders.row_chunks(12))) == -(-12 // chunk)
        maps = read_heatmaps([block, full], 0.05)
        np.testing.assert_array_equal(maps["bs"], whole_maps["bs"])
        assert maps["with_sis"] == whole_maps["with_sis"] and maps["images"] == 24
        for tau in whole_maps["sis"]:
            np.testing.assert_array_equal(maps["sis"][tau], whole_maps["sis"][tau])
        pairs = zip(heatmap_panels(block, [tmp_path / "bs.h5"], 0.9), whole_panels, strict=True)
        for (title, value), (other, expected) in pairs:
            assert title == other
            np.testing.assert_array_equal(value, expected)


def test_block_order_files_are_smaller(files, tmp_path):
    _, _, block, full = files
    with h5py.File(block) as b, h5py.File(full) as f:
        raw = f["order"].nbytes / b["order"].nbytes
        disk = f["order"].id.get_storage_size() / b["order"].id.get_storage_size()
    files_ratio = full.stat().st_size / block.stat().st_size
    print(f"/order of {P} features: {raw:.2f}x smaller uncompressed, {disk:.3f}x on disk (gzip+shuffle); "
          f"whole file {files_ratio:.3f}x")
    assert raw == 2.0
    assert disk > 1.0 and files_ratio > 1.0
    # ImageNet scale (224 x 224 pixel features, val: 50,000 images) from 4 random permutations
    imagenet = np.stack([np.random.default_rng(i).permutation(224 * 224) for i in range(4)])
    per_feature = {}
    for layout in orders.FORMATS:
        with h5py.File(tmp_path / f"{layout}.h5", "w") as handle:
            dataset = handle.create_dataset("order", data=orders.encode(imagenet, layout), **COMPRESSION)
            per_feature[layout] = (dataset.dtype.itemsize, dataset.id.get_storage_size() / imagenet.size)
    bound = sum(math.log2(k) for k in range(1, 224 * 224 + 1)) / (224 * 224) / 8  # log2(p!) bits
    values = 50_000 * 224 * 224 / 1e9
    print("ImageNet val /order, GB: " + ", ".join(f"{layout} {raw * values:.2f} raw, {disk * values:.2f} on disk"
                                                  for layout, (raw, disk) in per_feature.items())
          + f"; any exact layout >= {bound * values:.2f}")
    assert per_feature["block"][0] * 2 == per_feature["full"][0]
    assert bound * 1.1 < per_feature["block"][1] < per_feature["full"][1]
    # p <= 256 (e.g. ViT's 196 patches): uint8 ids, 4x smaller uncompressed
    small = orders.encode(np.stack([np.random.default_rng(i).permutation(196) for i in range(3)]), "block")
    assert small.dtype == np.uint8 and small.nbytes * 4 == orders.encode(small, "full").nbytes


def test_block_shards_merge_into_the_unsharded_file(files, tmp_path):
    dataset, model, _, _ = files
    spec = gradient_spec(sample=10, seed=4, tie_break="random", tie_break_seed=2)
    extract([model], dataset, spec, out=tmp_path / "whole.h5", device="cpu")
    merge_shards([tmp_path / "whole.h5"], tmp_path / "whole_merged.h5")
    shards = [tmp_path / f"shard{i}of3.h5" for i in range(3)]
    for i, path in enumerate(shards):
        extract([model], dataset, spec, shard=i, num_shards=3, out=path, device="cpu")
    merge_shards(shards, tmp_path / "merged.h5")
    whole, whole_attrs = read_all(tmp_path / "whole_merged.h5")
    merged, merged_attrs = read_all(tmp_path / "merged.h5")
    assert sorted(whole) == sorted(merged) and merged["order"].dtype == np.uint16
    for name, value in whole.items():
        assert merged[name].dtype == value.dtype, name
        if value.dtype.kind == "f":  # float32 forward passes may differ in the last bits between batches
            np.testing.assert_allclose(merged[name], value, rtol=0, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(merged[name], value, err_msg=name)
    assert merged_attrs["order_format"] == whole_attrs["order_format"] == "block"
    # a shard of the old layout does not join block shards
    as_full_file(shards[1], tmp_path / "old.h5")
    shutil.move(tmp_path / "old.h5", shards[1])
    with pytest.raises(UserError, match="differ in attribute 'order_format'"):
        merge_shards(shards, tmp_path / "mixed.h5")


def test_block_index_subsets_equal_full_ones(tmp_path, monkeypatch):
    """ImageNet-index subsets (masks written as the images stream) read block files too."""
    torch.set_num_threads(1)
    index = make_imagenet_index(tmp_path, {"train": 4, "val": 6}, 8, noise=100, step=120)
    model = save_untrained_model(tmp_path / "model.pt", index)
    block = tmp_path / "block.h5"
    extract([model], index, sis_spec(method="gradient", block=5, thresholds=[0.9]), out=block, device="cpu")
    full = as_full_file(block, tmp_path / "full.h5")
    monkeypatch.setattr(index_subsets, "CHUNK", 5)  # 12 images: three chunks
    for path in (block, full):
        request = SubsetRequest("bs", 0.3, -1, "bs", str(tmp_path / f"bs_{path.stem}.h5"))
        build_subset_datasets(index, {"test": path}, [request])
    with h5py.File(tmp_path / "bs_block.h5") as b, h5py.File(tmp_path / "bs_full.h5") as f:
        assert b["test/masks"][()].sum() == 12 * round(0.3 * 64)  # 6 images of each of 2 classes
        np.testing.assert_array_equal(b["test/masks"][()], f["test/masks"][()])


def test_unknown_order_format_is_refused_naming_the_file(files, tmp_path):
    _, _, block, _ = files
    path = Path(shutil.copyfile(block, tmp_path / "future.h5"))
    with h5py.File(path, "a") as handle:
        handle.attrs["order_format"] = "entropy"
    with pytest.raises(UserError, match=r"future\.h5 has order_format 'entropy'"):
        read_heatmaps([path], 0.1)


def test_figures_read_only_the_masks_of_the_images_they_draw(files):
    from pathologies.sis.figures import _sis_of_rows

    _, _, block, _ = files
    with h5py.File(block) as handle:
        index, mask, none = handle["index"][()], handle["sis/0.9/mask"][()], handle["sis/0.9/none"][()]
        wanted = index[[1, 4, 7]]
        found = _sis_of_rows(handle, 0.9, block, np.append(wanted, 10_000))  # a row the file lacks: skipped
    assert sorted(found) == sorted(wanted)
    for i in (1, 4, 7):
        np.testing.assert_array_equal(found[index[i]][0], mask[i])
        assert found[index[i]][1] == none[i]
