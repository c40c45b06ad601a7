"""Image difficulty and error consistency per superclass (Meding et al. 2022, A.12, Figures 11-12).

    python -m pathologies.ddd.superclasses --experiment experiment.json --difficulty difficulty.csv \\
        [--map superclasses.csv] --out superclasses.csv --kappa-out superclass_kappa.csv

The map is the experiment key ``superclasses``: ``cifar100`` (the 20 coarse classes of CIFAR-100, by fine
class name, built in) or a CSV file the user places with a column ``superclass`` and either ``class``
(all class indices, or class names such as ImageNet wnids) or ``image_id`` (per image, as the paper's ImageNet map
of Tsipras et al.). Images without a superclass are left out and counted in the log.

``superclasses.csv``: one row per superclass x category (trivial / in_between / impossible under the
experiment's ``in_between_rule``): n_images, share_of_superclass (Figure 11: each superclass sums to 1),
share_of_category (Figure 12: each category sums to 1), and per superclass n_classes, accuracy (mean
fraction of the difficulty set right) and kappa (mean over the difficulty set's pairs, on that superclass's
images). ``superclass_kappa.csv``: every pair of the difficulty set per superclass (the statistics of
kappa.csv).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from ..cliargs import CommandParser
from ..errors import UserError, cli
from ..io import atomic_output, read_csv, read_experiment
from .consistency import consistency_table
from .experiment import KEYS
from .measures import CATEGORIES

CIFAR100_COARSE = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


def builtin_map(name: str) -> dict[str, str]:
    """class name -> superclass of a built-in map (``cifar100``: CIFAR-100's coarse labels)."""
    if name != "cifar100":
        raise UserError(f"superclasses: {name!r} is neither 'cifar100' nor a .csv file")
    return {fine: coarse for coarse, fines in CIFAR100_COARSE.items() for fine in fines.split()}


def image_superclasses(difficulty: pd.DataFrame, source: str) -> pd.Series:
    """Superclass of every image of ``difficulty.csv`` (NaN where the map has none)."""
    if not source.endswith(".csv"):
        mapping = builtin_map(source)
        missing = sorted(set(difficulty["class_name"]) - set(mapping))
        if missing:
            raise UserError(f"superclasses: {source}: classes {missing[:3]} are not in the built-in map; "
                            "is this the dataset it is for?")
        return difficulty["class_name"].map(mapping)
    try:
        table = pd.read_csv(source)
    except FileNotFoundError:
        raise UserError(f"superclass map {source} does not exist; place it there (docs/ddd.md 'Data the user "
                        "places') or fix ddd.<experiment>.superclasses") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"superclass map {source} is not a readable CSV file ({err})") from None
    keys = [key for key in ("image_id", "class") if key in table.columns]
    if "superclass" not in table.columns or not keys:
        raise UserError(f"superclass map {source} needs columns superclass and class or image_id "
                        f"(has {list(table.columns)})")
    key = keys[0]
    if table[key].duplicated().any():
        raise UserError(f"superclass map {source}: {key} {table[key][table[key].duplicated()].iloc[0]!r} "
                        "has more than one superclass")
    mapping = table.set_index(key)["superclass"].astype(str)
    if key == "image_id":
        return difficulty["image_id"].map(mapping)
    if pd.api.types.is_integer_dtype(table["class"]):  # class indices (names may look like numbers too)
        return difficulty["target"].map(mapping)
    return difficulty["class_name"].astype(str).map({str(k): v for k, v in mapping.items()})


def superclass_tables(difficulty: pd.DataFrame, superclass: pd.Series, rule: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(superclasses, superclass_kappa) tables from difficulty.csv rows and their superclasses."""
    category = difficulty[rule].to_numpy()
    known = superclass.notna().to_numpy()
    data = pd.DataFrame({"superclass": superclass[known].to_numpy(), "category": category[known],
                         "target": difficulty["target"].to_numpy()[known],
                         "fraction_correct": difficulty["fraction_correct"].to_numpy()[known]})
    columns = [c for c in difficulty.columns if c.startswith("correct.")]
    correct = difficulty.loc[known, columns].to_numpy().astype(bool).T  # (models, images)
    counts = data.groupby(["superclass", "category"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(CATEGORIES), fill_value=0)
    kappa_rows = []
    for name in counts.index:
        mask = (data["superclass"] == name).to_numpy()
        table = consistency_table(correct[:, mask], [c.removeprefix("correct.") for c in columns])
        kappa_rows.append(table.drop(columns="epoch").assign(superclass=name))
    kappa = pd.concat(kappa_rows, ignore_index=True)
    kappa.insert(0, "superclass", kappa.pop("superclass"))
    per_superclass = data.groupby("superclass").agg(n_classes=("target", "nunique"),
                                                   accuracy=("fraction_correct", "mean"))
    per_superclass["kappa"] = kappa.groupby("superclass")["kappa"].mean()
    long = counts.stack().rename("n_images").reset_index()
    long["share_of_superclass"] = long["n_images"] / long.groupby("superclass")["n_images"].transform("sum")
    per_category = long.groupby("category")["n_images"].transform("sum")
    long["share_of_category"] = long["n_images"] / per_category.replace(0, np.nan)
    long = long.join(per_superclass, on="superclass")
    return long, kappa


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="experiment.json (pathologies.ddd.experiment)")
    parser.add_argument("--difficulty", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--kappa-out", required=True)
    args = parser.parse_args(argv)
    spec = read_experiment(args.experiment, KEYS)
    if not spec.get("superclasses"):
        raise UserError(f"experiment {spec['name']!r} sets no superclasses map")
    difficulty = read_csv(args.difficulty, "difficulty table")
    superclass = image_superclasses(difficulty, spec["superclasses"])
    print(f"{int(superclass.isna().sum())} of {len(difficulty)} images have no superclass and are left out",
          file=sys.stderr)
    if superclass.isna().all():
        raise UserError(f"superclass map {spec['superclasses']} matches no image of {args.difficulty}; "
                        "check its class names, indices or image ids")
    rule = spec["in_between_rule"]
    table, kappa = superclass_tables(difficulty, superclass, rule)
    with atomic_output(args.out) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_output(args.kappa_out) as tmp:
        kappa.to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
