"""DDD analyses by group of images: superclasses (A.12), label ambiguity (A.13), Table 1 (class extremes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ddd_fixtures import N_IMAGES, E, member_correct
from pathologies.data.class_names import readable_names
from pathologies.ddd import ambiguity, class_extremes, figures, superclasses
from pathologies.ddd import difficulty as ddd_difficulty
from pathologies.ddd.consistency import error_consistency
from pathologies.errors import UserError

LABELS = ("base", "plus1ep", "init.s2", "halves.1")


def test_superclass_shares_and_kappa_follow_a_class_map(experiment, tmp_path):
    """A user map puts class c0 in superclass 'a' and c1, c2 in 'b' (by name, or by index): shares and kappa
    per superclass are recomputed from the planted decisions."""
    difficulty = ddd_difficulty.build_tables(experiment["spec"], experiment["dataset"])["difficulty"]
    targets = experiment["targets"]
    path = tmp_path / "map.csv"
    pd.DataFrame({"class": [0, 1, 2], "superclass": ["a", "b", "b"]}).to_csv(path, index=False)
    assert superclasses.image_superclasses(difficulty, str(path)).tolist() == np.where(targets == 0, "a", "b").tolist()
    pd.DataFrame({"class": ["c0", "c1", "c2"], "superclass": ["a", "b", "b"]}).to_csv(path, index=False)
    superclass = superclasses.image_superclasses(difficulty, str(path))
    assert superclass.tolist() == np.where(targets == 0, "a", "b").tolist()
    table, kappa = superclasses.superclass_tables(difficulty, superclass, "strict")
    stack = np.stack([member_correct(experiment, label, E) for label in LABELS])
    n_correct = stack.sum(axis=0)
    in_a = targets == 0
    trivial_a = table[(table["superclass"] == "a") & (table["category"] == "trivial")].iloc[0]
    assert trivial_a["n_images"] == np.count_nonzero(in_a & (n_correct == 4))
    assert trivial_a["share_of_superclass"] == pytest.approx(np.count_nonzero(in_a & (n_correct == 4)) / in_a.sum())
    assert trivial_a["share_of_category"] == pytest.approx(np.count_nonzero(in_a & (n_correct == 4))
                                                           / np.count_nonzero(n_correct == 4))
    assert table.groupby("superclass")["share_of_superclass"].sum().tolist() == pytest.approx([1, 1])
    assert trivial_a["accuracy"] == pytest.approx(n_correct[in_a].mean() / 4)
    row = kappa[(kappa["superclass"] == "b") & (kappa["model_a"] == "base") & (kappa["model_b"] == "init.s2")].iloc[0]
    assert row["kappa"] == pytest.approx(error_consistency(stack[0][~in_a], stack[2][~in_a])["kappa"])
    assert row["n_images"] == np.count_nonzero(~in_a)
    shares = figures.plot_superclasses(table, tmp_path / "fig11.png")
    assert list(shares.columns) == ["trivial", "in_between", "impossible"]
    figures.plot_superclass_categories(table, tmp_path / "fig12.png")
    assert (tmp_path / "fig11.png").stat().st_size and (tmp_path / "fig12.png").stat().st_size

    per_image = tmp_path / "images.csv"
    pd.DataFrame({"image_id": experiment["ids"][:10], "superclass": "x"}).to_csv(per_image, index=False)
    assert superclasses.image_superclasses(difficulty, str(per_image)).notna().sum() == 10
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"class": ["c0"], "group": ["a"]}).to_csv(bad, index=False)
    with pytest.raises(UserError, match="needs columns superclass and class or image_id"):
        superclasses.image_superclasses(difficulty, str(bad))
    with pytest.raises(UserError, match="are not in the built-in map"):
        superclasses.image_superclasses(difficulty, "cifar100")


def test_cifar100_coarse_map_covers_the_100_classes_five_each():
    mapping = superclasses.builtin_map("cifar100")
    assert len(mapping) == 100 and len(set(mapping.values())) == 20
    assert pd.Series(mapping).value_counts().eq(5).all()
    assert mapping["aquarium_fish"] == "fish" and mapping["willow_tree"] == "trees"


def test_label_ambiguity_per_category(experiment, tmp_path):
    difficulty = ddd_difficulty.build_tables(experiment["spec"], experiment["dataset"])["difficulty"]
    rng = np.random.default_rng(3)
    rated = np.sort(rng.choice(N_IMAGES, 60, replace=False))
    flags = rng.integers(0, 2, 60)
    path = tmp_path / "ambiguity.csv"
    pd.DataFrame({"image_id": experiment["ids"][rated], "ambiguous": flags}).to_csv(path, index=False)
    table = ambiguity.ambiguity_table(difficulty, ambiguity.read_ambiguity(str(path)), "loose").set_index("category")
    between = (difficulty["loose"] == "in_between").to_numpy()
    flagged = np.zeros(N_IMAGES, bool)
    flagged[rated[flags == 1]] = True
    assert table.loc["in_between", "n_ambiguous"] == np.count_nonzero(flagged & between)
    assert table.loc["in_between", "fraction_ambiguous"] == pytest.approx((flagged & between).sum() / between.sum())
    assert table.loc["all", "n_rated"] == 60 and table.loc["all", "n_ambiguous"] == flags.sum()
    figures.plot_label_ambiguity(table.reset_index(), tmp_path / "a13.png")
    pd.DataFrame({"image_id": [1], "ambiguous": [2]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserError, match="ambiguous 0 or 1"):
        ambiguity.read_ambiguity(str(tmp_path / "bad.csv"))


def test_table1_lists_easiest_and_hardest_classes_of_the_base(tmp_path):
    accuracy = [0.9, 0.1, 0.5, 0.7, 0.3]
    rows = pd.DataFrame({"member": "base", "class": range(5), "class_name": list("abcde"), "accuracy": accuracy})
    other = rows.assign(member="init", accuracy=0.5)
    table = class_extremes.class_extremes(pd.concat([rows, other]), n=2)
    assert table[table["side"] == "easiest"]["class_name"].tolist() == ["a", "d"]
    assert table[table["side"] == "hardest"]["class_name"].tolist() == ["b", "e"]
    assert table.loc[0, "mean_accuracy"] == pytest.approx(0.7)
    figures.plot_class_extremes(table, tmp_path / "t1.png")
    assert (tmp_path / "t1.png").stat().st_size > 0
    assert table["label"].tolist() == table["class_name"].tolist()


def test_imagenet_wordnet_ids_get_readable_names_in_table1_and_figure20(tmp_path):
    """The 1,000 sorted WordNet ids become torchvision's category names (class 0 tench, 999 toilet tissue;
    the paper's Table 1 names 'earthstar', class 995)."""
    wnids = [f"n{i:08d}" for i in range(1000)]
    names = readable_names(wnids)
    assert (names[0], names[995], names[999]) == ("tench", "earthstar", "toilet tissue")
    assert readable_names(["n00000001", "cat"]) == ["n00000001", "cat"]
    accuracy = np.linspace(0, 1, 1000)
    rows = pd.DataFrame({"member": "base", "class": range(1000), "class_name": wnids, "accuracy": accuracy})
    table = class_extremes.class_extremes(rows, n=1)
    assert table["label"].tolist() == ["toilet tissue", "tench"]
    data = figures.plot_class_accuracy(rows, tmp_path / "fig20.png")
    assert data["class_name"].iloc[0] == "toilet tissue"
