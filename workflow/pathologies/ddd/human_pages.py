"""Static pages for the human experiments of Meding et al. (2022), A.10 (Figures 18, 19, 23, 24).

    python -m pathologies.ddd.human_pages --experiment experiment.json --difficulty difficulty.csv \\
        --difficulty-excluded difficulty_excluded.csv --dataset results/data/X.h5 --out-dir results/ddd/X/human

Experiment 1 (two-alternative forced choice): ``pairs`` trials, each a trivial image (all models right)
and an impossible one (none right) under the rule ``human.rule``, sides drawn at random; observers answer
which image is easier for a network (L / R). Experiment 2: ``questions_per_category`` trivial, in-between
and impossible images in random order, each with three questions. Writes into ``--out-dir``:

- ``images/<image_id>.png``: the images, not normalised (as the paper's stimuli);
- ``pairs.csv`` (trial, left_id, right_id, trivial_id, impossible_id, easier: L / R) and ``pairs.html``;
- ``questions.csv`` (trial, image_id, category, fraction_correct, label_error) and ``questions.html``;
- ``answers_template_pairs.csv`` and ``answers_template_questions.csv``: what an observer fills in
  (docs/ddd.md "Human experiments"), scored by :mod:`pathologies.ddd.human_scores`.

Everything is drawn from ``human.seed``; the pages need no server or script (open them in a browser).
Label errors (the images of ``exclude_ids``), as the authors' stimuli: never in experiment 1 (pairs from
difficulty.csv only); in experiment 2 drawn like every other image (difficulty.csv and
difficulty_excluded.csv together, in image-id order, so the same seed draws the same images whatever
``exclude_ids`` lists) and flagged in ``label_error``: the analysis reads them with and without label errors.
"""

from __future__ import annotations

import html
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..cliargs import CommandParser
from ..errors import UserError, cli
from ..io import read_csv, read_experiment, read_h5
from ..models.activations import split_images
from .experiment import KEYS

MIN_PIXELS = 160  # small images are enlarged (nearest neighbour) to at least this size on the page


def sample_pairs(difficulty: pd.DataFrame, rule: str, n_pairs: int, seed: int) -> pd.DataFrame:
    """Trials of experiment 1: a trivial and an impossible image each, sides drawn at random."""
    rng = np.random.default_rng([seed, 1])
    trivial = difficulty.loc[difficulty[rule] == "trivial", "image_id"].to_numpy()
    impossible = difficulty.loc[difficulty[rule] == "impossible", "image_id"].to_numpy()
    count = min(n_pairs, len(trivial), len(impossible))
    if count == 0:
        raise UserError(f"no trivial / impossible image pairs under the {rule} rule "
                        f"({len(trivial)} trivial, {len(impossible)} impossible); lower human.pairs or use rule: loose")
    easy = rng.choice(trivial, count, replace=False)
    hard = rng.choice(impossible, count, replace=False)
    left_easy = rng.random(count) < 0.5
    return pd.DataFrame({"trial": np.arange(1, count + 1), "left_id": np.where(left_easy, easy, hard),
                         "right_id": np.where(left_easy, hard, easy), "trivial_id": easy, "impossible_id": hard,
                         "easier": np.where(left_easy, "L", "R")})


def all_images(difficulty: pd.DataFrame, excluded: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every image of the split by image id: the rows of difficulty.csv and of difficulty_excluded.csv (the
    label errors), with a column ``label_error``."""
    parts = [difficulty.assign(label_error=False)]
    if excluded is not None and len(excluded):  # an empty table would only blur the column types
        parts.append(excluded.assign(label_error=True))
    return pd.concat(parts, ignore_index=True).sort_values("image_id", kind="stable").reset_index(drop=True)


def sample_questions(images: pd.DataFrame, rule: str, per_category: int, seed: int) -> pd.DataFrame:
    """Trials of experiment 2: up to ``per_category`` images of each category, shuffled (``images``: rows of
    :func:`all_images`; without a ``label_error`` column none is one)."""
    rng = np.random.default_rng([seed, 2])
    if "label_error" not in images.columns:
        images = images.assign(label_error=False)
    parts = []
    for category in ("trivial", "in_between", "impossible"):
        rows = images[images[rule] == category]
        take = rows.iloc[np.sort(rng.choice(len(rows), min(per_category, len(rows)), replace=False))]
        parts.append(pd.DataFrame({"image_id": take["image_id"].to_numpy(), "category": category,
                                   "fraction_correct": take["fraction_correct"].to_numpy(),
                                   "label_error": take["label_error"].to_numpy(dtype=bool)}))
    table = pd.concat(parts, ignore_index=True)
    table = table.iloc[rng.permutation(len(table))].reset_index(drop=True)
    table.insert(0, "trial", np.arange(1, len(table) + 1))
    return table


def write_images(dataset: str, split: str, image_ids: np.ndarray, folder: Path) -> None:
    """The images with these ids as PNG files ``<id>.png`` (uint8 as stored / decoded, not normalised)."""
    with read_h5(dataset, "prepared dataset") as handle:
        ids = handle[split]["ids"][()]
    position = {int(image_id): row for row, image_id in enumerate(ids)}
    wanted = sorted({int(i) for i in image_ids})
    images, _ = split_images(dataset, split, [position[i] for i in wanted])
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, image in zip(wanted, images, strict=True):
        picture = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
        scale = max(1, -(-MIN_PIXELS // max(picture.size)))
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
        picture.save(folder / f"{image_id}.png", format="png")  # inside the folder that appears at once


def _page(title: str, instructions: str, trials: list[str]) -> str:
    style = ("body{font-family:sans-serif;margin:2em}.trial{display:flex;align-items:center;gap:1em;"
             "margin:1.5em 0;page-break-inside:avoid}.n{width:3em;font-weight:bold}img{width:224px;"
             "image-rendering:pixelated;border:1px solid #ccc}.side{text-align:center}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{instructions}</p>"
            + "".join(trials) + "</body></html>\n")


def pairs_page(pairs: pd.DataFrame) -> str:
    trials = [f"<div class='trial'><div class='n'>{row.trial}</div><div class='side'>L<br><img src='images/"
              f"{row.left_id}.png' alt=''></div><div class='side'>R<br><img src='images/{row.right_id}.png' "
              "alt=''></div></div>" for row in pairs.itertuples()]
    return _page("Which image is easier for a neural network?",
                 "Is the right or the left image easier to classify for a neural network? Write L or R "
                 "next to the trial number in your answer sheet (column <code>answer</code>).", trials)


def questions_page(questions: pd.DataFrame) -> str:
    trials = [f"<div class='trial'><div class='n'>{row.trial}</div><img src='images/{row.image_id}.png' alt=''>"
              "</div>" for row in questions.itertuples()]
    return _page("Three questions per image",
                 "q1: How many objects belonging to different categories are in the image (three dogs are one "
                 "category; two dogs and a cat are two)? q2: Is there a main category in the image? (no, maybe, "
                 "yes) q3: Is the presentation of the objects unusual in any manner, e.g. orientation, location, "
                 "size, viewpoint? (no, slightly, very)", trials)


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces ``path`` only on success."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="experiment.json (pathologies.ddd.experiment)")
    parser.add_argument("--difficulty", required=True)
    parser.add_argument("--difficulty-excluded", help="difficulty_excluded.csv: the label errors (experiment 2 only)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    spec = read_experiment(args.experiment, KEYS)
    human = spec.get("human")
    if not human:
        raise UserError(f"experiment {spec['name']!r} sets no human experiments (key human)")
    difficulty = read_csv(args.difficulty, "difficulty table")
    pairs = sample_pairs(difficulty, human["rule"], human["pairs"], human["seed"])
    excluded = read_csv(args.difficulty_excluded, "difficulty table") if args.difficulty_excluded else None
    questions = sample_questions(all_images(difficulty, excluded), human["rule"], human["questions_per_category"],
                                 human["seed"])
    with atomic_folder(Path(args.out_dir)) as tmp:
        write_images(args.dataset, spec["split"], np.concatenate([pairs["left_id"], pairs["right_id"],
                                                                  questions["image_id"]]), tmp / "images")
        pairs.to_csv(tmp / "pairs.csv", index=False)
        questions.to_csv(tmp / "questions.csv", index=False)
        (tmp / "pairs.html").write_text(pairs_page(pairs))
        (tmp / "questions.html").write_text(questions_page(questions))
        pd.DataFrame({"trial": pairs["trial"], "answer": ""}).to_csv(tmp / "answers_template_pairs.csv", index=False)
        pd.DataFrame({"trial": questions["trial"], "q1": "", "q2": "", "q3": ""}).to_csv(
            tmp / "answers_template_questions.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
