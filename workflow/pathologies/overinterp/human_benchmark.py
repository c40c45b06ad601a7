"""Human classification benchmark of pixel subsets (supplement S5, Table S6, Figure S11).

Export (what the ``overinterp_human_benchmark`` rule runs)::

    python -m pathologies.overinterp.human_benchmark \
        --sis results/sis/<run>/<resnet20>/seed0/cifar10/test.h5 --sis .../<resnet18>/... --sis .../<vgg16>/... \
        --shares 35 35 30 --fractions 0.05 0.3 0.5 --images 100 --seed 0 \
        --html-out .../human_benchmark/index.html --key-out .../human_benchmark/key.csv

Score (one or more participants' answer files; the command in docs/file_formats.md)::

    python -m pathologies.overinterp.human_benchmark --score answers.json [more.json ...] --key-out key.csv \
        [--table-out human_accuracy.csv] [--figure-out human_accuracy.png]

For every fraction, ``images`` test images are shown with only their backward-selection subset of that
size (other pixels in the mean colour), in a seeded random order. With several ``--sis`` files (one per
source architecture, as the paper's 35 ResNet20 / 35 ResNet18 / 30 VGG16) the images of a fraction are
split between them by ``--shares`` (largest remainders; equal shares by default), each drawn from its
file with a separate seeded draw per fraction. ``index.html`` is self-contained (images embedded as PNG
data): a participant picks a class per image, sees how many items are still unanswered, and downloads the
answers as JSON (``{"participant": ..., "answers": {"<item>": "<class name>"}, "unanswered": [...]}``;
a download with unanswered items asks for confirmation first). ``key.csv`` holds the truth per item:
item, fraction, source (the file's model run), row (in the split), id, label, class_name, model_class
(what the source model predicts on the full image).

Scoring: an item is right when the answer equals ``class_name``; an unanswered item counts as wrong and
is counted. Per participant and fraction: n_items, n_unanswered, accuracy (%). Table S6 (``--table-out``):
per fraction the mean ± std (ddof 1) over participants; Figure S11 (``--figure-out``): accuracy against
subset size, one dot per participant, mean ± std.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..cliargs import CommandParser
from ..data.fill import apply_masks
from ..data.layout import dataset_info, mask_colour
from ..errors import UserError, cli
from ..io import atomic_output, h5py, read_csv, read_h5, read_json_attr
from ..sis.engine import Masking
from ..sis.extract import load_rows
from ..sis.orders import read_orders
from .subset_masks import backward_selection_features, feature_masks, subset_size

SCALE = 8  # each pixel drawn as SCALE x SCALE screen pixels


def split_shares(total: int, shares: Sequence[float]) -> list[int]:
    """``total`` items cut in proportion to ``shares`` by largest remainders (ties: the earlier share)."""
    weights = np.asarray(shares, dtype=np.float64)
    if len(weights) == 0 or (weights < 0).any() or weights.sum() <= 0:
        raise UserError(f"--shares {list(shares)} must be non-negative numbers with a positive sum")
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for i in sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))[:total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def _source_name(handle: h5py.File, path: str | Path) -> str:
    run = read_json_attr(handle, "model_run") if "model_run" in handle.attrs else None
    if isinstance(run, dict) and "model" in run:
        return f"{run['model']}/seed{run.get('seed', 0)}"
    return str(path)


def benchmark_items(sis_paths: str | Path | Sequence[str | Path], fractions: Sequence[float], images: int,
                    seed: int, shares: Sequence[float] | None = None) -> pd.DataFrame:
    """The items (one row each, shuffled) with their truth; ``image`` holds the masked uint8 image.

    ``sis_paths``: one SIS file, or one per source model (images of a fraction split by ``shares``).
    """
    paths = [sis_paths] if isinstance(sis_paths, (str, Path)) else list(sis_paths)
    shares = [1.0] * len(paths) if shares is None else list(shares)
    if len(shares) != len(paths):
        raise UserError(f"--shares has {len(shares)} numbers for {len(paths)} --sis files; give one per file")
    counts = split_shares(images, shares)
    sources, class_names = [], None
    for path, count in zip(paths, counts, strict=True):
        with read_h5(path, "SIS file") as handle:
            source = {"path": path, "order": read_orders(handle, path=path), "rows": handle["index"][()],
                      "labels": handle["label"][()], "classes": handle["class"][()],
                      "patch": int(handle.attrs["patch"]), "name": _source_name(handle, path),
                      "dataset": str(read_json_attr(handle, "dataset")), "split": str(read_json_attr(handle, "split"))}
        if count > len(source["rows"]):
            raise UserError(f"human benchmark: {count} images per fraction requested from {path}, which holds only "
                            f"{len(source['rows'])}; lower `images`")
        info = dataset_info(source["dataset"])
        if class_names is not None and list(info.class_names) != class_names:
            raise UserError(f"{path} is of a dataset with other classes than {paths[0]}; mix SIS of one dataset")
        class_names = list(info.class_names)
        if any(other["name"] == source["name"] for other, _, _ in sources):
            source["name"] = str(path)  # the same model twice (e.g. two runs): tell the files apart
        sources.append((source, info, count))
    rng = np.random.default_rng(seed)
    items = []
    for fraction in fractions:
        for source, info, count in sources:
            height, width, _ = info.image_shape
            order, rows = source["order"], source["rows"]
            pick = np.sort(rng.choice(len(rows), count, replace=False))
            chosen = load_rows(source["dataset"], info, source["split"], rows[pick])
            pixels, ids = chosen.images, chosen.ids
            size = subset_size(fraction, order.shape[1])
            masks = feature_masks(backward_selection_features(order[pick], size), Masking(patch=source["patch"]),
                                  height, width)
            masked = apply_masks(pixels, masks, mask_colour(info.mean))
            for i, k in enumerate(pick):
                label = int(source["labels"][k])
                items.append({"fraction": fraction, "source": source["name"], "row": int(rows[k]), "id": int(ids[i]),
                              "label": label, "class_name": info.class_names[label],
                              "model_class": int(source["classes"][k]), "image": masked[i]})
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
<form id="answers" onchange="count()">
{blocks}
</form>
<p><strong><span id="unanswered">{len(items)}</span> of {len(items)} images unanswered.</strong></p>
<button id="download" onclick="download()">Download answers</button>
<script>
function unanswered() {{
  return Array.from(document.querySelectorAll('#answers select')).filter(s => s.value === '').map(s => s.name);
}}
function count() {{
  document.getElementById('unanswered').textContent = unanswered().length;
}}
function download() {{
  const missing = unanswered();
  const question = missing.length + ' images are unanswered (they count as wrong). Download anyway?';
  if (missing.length && !confirm(question)) return;
  const answers = {{}};
  for (const s of document.querySelectorAll('#answers select')) if (s.value !== '') answers[s.name] = s.value;
  const blob = new Blob([JSON.stringify({{participant: document.getElementById('participant').value, answers,
                                          unanswered: missing}})],
                        {{type: 'application/json'}});
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = 'answers.json';
  a.click();
}}
</script>
</body></html>
"""


def export(sis_paths: str | Path | Sequence[str | Path], fractions: Sequence[float], images: int, seed: int,
           html_out: str | Path, key_out: str | Path, shares: Sequence[float] | None = None) -> None:
    """Write the answer page and the answer key, atomically."""
    items = benchmark_items(sis_paths, fractions, images, seed, shares)
    first = sis_paths if isinstance(sis_paths, (str, Path)) else sis_paths[0]
    with read_h5(first, "SIS file") as handle:
        class_names = dataset_info(str(read_json_attr(handle, "dataset"))).class_names
    with atomic_output(html_out) as tmp:
        tmp.write_text(render_page(items, class_names))
    with atomic_output(key_out) as tmp:
        items.drop(columns="image").to_csv(tmp, index=False)


def read_answers(path: str | Path) -> dict:
    """One answers JSON as downloaded from the page (clear error for anything else)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"answers file {path} does not exist")
    try:
        answers = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"answers file {path} is not JSON ({err}); use the file the answer page downloads") from None
    if not isinstance(answers, dict) or not isinstance(answers.get("answers"), dict):
        raise UserError(f"answers file {path} has no 'answers' object; use the file the answer page downloads")
    for item, answer in answers["answers"].items():
        if not isinstance(answer, str):
            raise UserError(f"answers file {path}: item {item!r} has the answer {json.dumps(answer)} "
                            f"({type(answer).__name__}), not a class name; use the file the answer page downloads")
    return answers


def score(answers: dict, key: pd.DataFrame) -> pd.DataFrame:
    """Per fraction of one participant: n_items, n_unanswered, correct, accuracy (%; unanswered = wrong)."""
    given = key["item"].map(lambda item: answers.get("answers", {}).get(item, "") or "")
    frame = key.assign(correct=given == key["class_name"], unanswered=given == "")
    table = frame.groupby("fraction").agg(n_items=("item", "size"), n_unanswered=("unanswered", "sum"),
                                          correct=("correct", "sum")).reset_index()
    table["accuracy"] = 100.0 * table["correct"] / table["n_items"]
    return table


def score_files(paths: Sequence[str | Path], key: pd.DataFrame) -> pd.DataFrame:
    """Scores of several answer files: one row per (participant, fraction)."""
    rows = []
    for path in paths:
        answers = read_answers(path)
        unknown = sorted(set(answers["answers"]) - set(key["item"]))
        if unknown:
            raise UserError(f"answers file {path} answers items {unknown[:3]} that the key does not hold; "
                            "score it against the key of the page it was answered on")
        participant = str(answers.get("participant") or Path(path).stem)
        rows.append(score(answers, key).assign(participant=participant, file=str(path)))
    return pd.concat(rows, ignore_index=True)


def table_s6(scores: pd.DataFrame) -> pd.DataFrame:
    """Table S6: accuracy (%) per fraction, mean ± std (ddof 1) over participants."""
    rows = []
    for fraction, group in scores.groupby("fraction"):
        values = group["accuracy"].to_numpy(dtype=np.float64)
        rows.append({"fraction": fraction, "n_participants": len(values), "accuracy_mean": values.mean(),
                     "accuracy_std": values.std(ddof=1) if len(values) > 1 else float("nan"),
                     "n_unanswered": int(group["n_unanswered"].sum())})
    return pd.DataFrame(rows)


def plot_s11(scores: pd.DataFrame, table: pd.DataFrame, out: str | Path) -> None:
    """Figure S11: human accuracy against pixel-subset size, one dot per participant, mean ± std."""
    figure, axis = plt.subplots(figsize=(4, 3))
    axis.scatter(100 * scores["fraction"], scores["accuracy"], s=12, alpha=0.5, label="participants")
    axis.errorbar(100 * table["fraction"], table["accuracy_mean"], yerr=table["accuracy_std"].fillna(0), fmt="o-",
                  capsize=3, color="black", label="mean ± std")
    axis.set_xlabel("pixel subset (% of pixels kept)")
    axis.set_ylabel("human accuracy (%)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=7)
    with atomic_output(out) as tmp:
        figure.savefig(tmp, dpi=120, format=Path(out).suffix.lstrip("."), bbox_inches="tight")
    plt.close(figure)


def _read_key(path: str | Path) -> pd.DataFrame:
    # items and class names are text: digits' class "3" (or "007") must not become the number 3 (7)
    return read_csv(path, "answer key", ("item", "fraction", "class_name"), text_columns=("item", "class_name"))


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--sis", action="append", help="merged SIS file of the test split (repeat per source model)")
    parser.add_argument("--shares", type=float, nargs="+", help="share of each --sis file's images (default equal)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.3, 0.5])
    parser.add_argument("--images", type=int, default=100, help="images per fraction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--html-out")
    parser.add_argument("--key-out", required=True, help="the answer key (written on export, read when scoring)")
    parser.add_argument("--score", nargs="+", metavar="ANSWERS_JSON",
                        help="score answer files against --key-out instead of exporting")
    parser.add_argument("--scores-out", help="with --score: per participant and fraction (CSV)")
    parser.add_argument("--table-out", help="with --score: Table S6, mean ± std over participants (CSV)")
    parser.add_argument("--figure-out", help="with --score: Figure S11 (PNG)")
    args = parser.parse_args(argv)
    if args.score:
        scores = score_files(args.score, _read_key(args.key_out))
        table = table_s6(scores)
        print(scores.to_string(index=False))
        print(table.to_string(index=False))
        if table["n_unanswered"].sum():
            print(f"note: {int(table['n_unanswered'].sum())} unanswered item(s) counted as wrong")
        for out, frame in ((args.scores_out, scores), (args.table_out, table)):
            if out:
                with atomic_output(out) as tmp:
                    frame.to_csv(tmp, index=False)
        if args.figure_out:
            plot_s11(scores, table, args.figure_out)
        return 0
    if not args.sis or not args.html_out:
        raise UserError("exporting needs --sis <file> (one per source model) and --html-out; to score answer "
                        "files pass --score answers.json --key-out key.csv")
    if args.images < 1:
        raise UserError(f"--images {args.images} must be at least 1")
    export(args.sis, args.fractions, args.images, args.seed, args.html_out, args.key_out, args.shares)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
