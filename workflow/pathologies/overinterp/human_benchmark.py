"""Export pixel-subset images for a human classification benchmark (supplement S5, Table S6).

Usage (what the ``overinterp_human_benchmark`` rule runs)::

    python -m pathologies.overinterp.human_benchmark --sis results/sis/<run>/<model>/seed<seed>/<dataset>/test.h5 \
        --fractions 0.05 0.3 0.5 --images 100 --seed 0 \
        --html-out .../human_benchmark/index.html --key-out .../human_benchmark/key.csv

For every fraction, ``images`` test images drawn with ``seed`` (a separate draw per fraction) are
shown with only their backward-selection subset of that size (other pixels in the mean colour),
in a seeded random order. ``index.html`` is self-contained (images embedded as PNG data): a
participant picks a class per image and downloads the answers as JSON
(``{"participant": ..., "answers": {"<item>": "<class name>"}}``). ``key.csv`` holds the truth per
item: item, fraction, row (in the split), id, label, class_name, model_class (what the model
predicts on the full image). Accuracy per fraction = answers matching ``class_name``.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..data.layout import dataset_info, mask_colour  # noqa: E402
from ..errors import UserError, cli  # noqa: E402
from ..io import atomic_output, h5py, read_json_attr  # noqa: E402
from ..sis.engine import Masking  # noqa: E402
from ..sis.extract import load_rows  # noqa: E402
from .subset_masks import apply_masks, backward_selection_features, feature_masks, subset_size  # noqa: E402

SCALE = 8  # each pixel drawn as SCALE x SCALE screen pixels


def benchmark_items(sis_path: str | Path, fractions: Sequence[float], images: int, seed: int) -> pd.DataFrame:
    """The items (one row each, shuffled) with their truth; ``image`` holds the masked uint8 image."""
    with h5py.File(sis_path, "r") as handle:
        order, rows = handle["order"][()], handle["index"][()]
        labels, classes, patch = handle["label"][()], handle["class"][()], int(handle.attrs["patch"])
        dataset_path, split = str(read_json_attr(handle, "dataset")), str(read_json_attr(handle, "split"))
    if images > len(rows):
        raise UserError(f"human benchmark: {images} images per fraction requested but {sis_path} holds only "
                        f"{len(rows)}; lower `images`")
    info = dataset_info(dataset_path)
    height, width, _ = info.image_shape
    rng = np.random.default_rng(seed)
    items = []
    for fraction in fractions:
        pick = np.sort(rng.choice(len(rows), images, replace=False))
        pixels, _, ids = load_rows(dataset_path, info, split, rows[pick])
        size = subset_size(fraction, order.shape[1])
        masks = feature_masks(backward_selection_features(order[pick], size), Masking(patch=patch), height, width)
        masked = apply_masks(pixels, masks, mask_colour(info.mean))
        for i, k in enumerate(pick):
            items.append({"fraction": fraction, "row": int(rows[k]), "id": int(ids[i]), "label": int(labels[k]),
                          "class_name": info.class_names[labels[k]], "model_class": int(classes[k]),
                          "image": masked[i]})
    frame = pd.DataFrame(items).iloc[rng.permutation(len(items))].reset_index(drop=True)
    frame.insert(0, "item", [f"q{i:04d}" for i in range(len(frame))])
    return frame


def png_data(image: np.ndarray) -> str:
    """A data URI of the uint8 image (H, W, C) enlarged SCALE times, pixel edges kept sharp."""
    big = np.repeat(np.repeat(image, SCALE, axis=0), SCALE, axis=1)
    buffer = io.BytesIO()
    plt.imsave(buffer, big.squeeze(-1) if big.shape[-1] == 1 else big, cmap="gray", vmin=0, vmax=255, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def render_page(items: pd.DataFrame, class_names: Sequence[str]) -> str:
    """The static answer page: one image and a class choice per item, answers downloaded as JSON."""
    options = "".join(f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in class_names)
    blocks = "\n".join(
        f'<figure><img src="{png_data(row.image)}" alt="{row.item}"><figcaption>{row.item} '
        f'<select name="{row.item}"><option value="">?</option>{options}</select></figcaption></figure>'
        for row in items.itertuples())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pixel-subset classification</title>
<style>body{{font-family:sans-serif}} figure{{display:inline-block;margin:8px}} img{{image-rendering:pixelated}}</style>
</head><body>
<h1>Which class is this?</h1>
<p>Each image shows only a small subset of the pixels of a photo (the rest is grey). Pick the class you think
it shows, then press "Download answers" and send the file back.</p>
<p>Participant: <input id="participant"></p>
<form id="answers">
{blocks}
</form>
<button onclick="download()">Download answers</button>
<script>
function download() {{
  const answers = {{}};
  for (const s of document.querySelectorAll('#answers select')) answers[s.name] = s.value;
  const blob = new Blob([JSON.stringify({{participant: document.getElementById('participant').value, answers}})],
                        {{type: 'application/json'}});
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = 'answers.json';
  a.click();
}}
</script>
</body></html>
"""


def export(sis_path: str | Path, fractions: Sequence[float], images: int, seed: int, html_out: str | Path,
           key_out: str | Path) -> None:
    """Write the answer page and the answer key, atomically."""
    with h5py.File(sis_path, "r") as handle:
        class_names = dataset_info(str(read_json_attr(handle, "dataset"))).class_names
    items = benchmark_items(sis_path, fractions, images, seed)
    with atomic_output(html_out) as tmp:
        tmp.write_text(render_page(items, class_names))
    with atomic_output(key_out) as tmp:
        items.drop(columns="image").to_csv(tmp, index=False)


def score(answers: dict, key: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per fraction of one participant's answers (the JSON the page downloads)."""
    given = key["item"].map(answers.get("answers", {}))
    return key.assign(correct=given == key["class_name"]).groupby("fraction")["correct"].mean().reset_index()


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sis", required=True, help="merged SIS file of the test split")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.3, 0.5])
    parser.add_argument("--images", type=int, default=100, help="images per fraction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--html-out", required=True)
    parser.add_argument("--key-out", required=True)
    parser.add_argument("--score", help="score an answers JSON against --key-out instead of exporting")
    args = parser.parse_args(argv)
    if args.score:
        print(score(json.loads(Path(args.score).read_text()), pd.read_csv(args.key_out)).to_string(index=False))
        return 0
    if args.images < 1:
        raise UserError(f"--images {args.images} must be at least 1")
    export(args.sis, args.fractions, args.images, args.seed, args.html_out, args.key_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
