"""Figures of a DDD experiment (Meding et al. 2022), drawn from its tables.

    python -m pathologies.ddd.figures <figure> --<input> <table> ... --out figure.png

Figures and their inputs (tables from :mod:`pathologies.ddd.kappa`, :mod:`pathologies.ddd.difficulty`,
:mod:`pathologies.ddd.kl`, :mod:`pathologies.ddd.rsa`):

    fig02_histogram           --histogram        models correct per image vs the binomial
    fig03_conditions          --conditions [--order]   kappa of each condition against the base
    fig04_decisions           --difficulty       models x images decisions, sorted by difficulty
    fig05_kappa_heatmaps      --kappa            condition x condition kappa: all vs in-between images
    fig07_rsa                 --rsa --members    RSA of each condition with the base run
    fig08_base_epochs         --predictions --epoch-kappa --experiment the base run, epochs 1..E
    fig09_kl_accuracy         --kl               Gaussian dataset: KL to the next class vs accuracy
    fig10_difficulty_models   --profiles --histograms   A.9 difficulty profiles and their histograms
    fig11_superclasses        --superclasses     categories within each superclass, kappa per superclass (A.12)
    fig12_superclass_categories --superclasses   superclasses within each category (A.12)
    fig13_accuracy            --members          accuracy of every model and condition (Figures 13 / 14)
    a13_label_ambiguity       --ambiguity        ambiguous labels per category (A.13)
    table1_class_extremes     --extremes         Table 1: easiest and hardest classes
    fig06_human_questions     --questions        experiment 2: categories per answer, pooled, label errors removed
    fig25_human_answers       --questions        experiment 2: answers per question, pooled, label errors kept
    fig26_human_answers       --questions        the same, label errors removed (Figure 26)
    fig27_human_observers     --questions        experiment 2: answers per question per observer, label errors kept
    fig28_human_observers     --questions        the same, label errors removed (Figure 28)
    human_pairs               --scores           experiment 1: observers' accuracy and consistency
    fig18_pairs               --human            experiment 1: example pairs (Figures 18 / 19) from the pages' folder
    fig17_decision_changes    --changes          decisions changed from one epoch to the next
    fig20_class_accuracy      --class-accuracy   per-class accuracy, sorted

Every plotting function saves a PNG and returns the data it plotted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.ticker import MaxNLocator

from ..analysis import add_parsers
from ..cliargs import CommandParser
from ..data.class_names import readable_names
from ..errors import UserError, cli
from ..io import read_experiment
from ..plots import save
from ..training.predictions import read_dump
from .exclusion import split_excluded
from .experiment import KEYS
from .rules import ANALYSES
from .summary import rsa_reference

CORRECT_WRONG_REDS = ListedColormap(["#fcbba1", "#a50f15"])  # Figure 4: light = right, dark = wrong
CORRECT_WRONG_BLUE = ListedColormap(["#ffffff", "#2171b5"])  # Figure 8: white = right, blue = wrong


def _save(fig: plt.Figure, out: str | Path) -> None:
    save(fig, out, dpi=130, tight=True)


def _theme() -> None:
    sns.set_theme(style="whitegrid", context="paper")


def plot_histogram(histogram: pd.DataFrame, out: str | Path, errors: str = "paper") -> pd.DataFrame:
    """Figure 2: fraction of images that k of M models get right, observed vs binomial; returns what is drawn
    (source, k, models correct, fraction).

    With excluded images (label errors), ``errors="paper"`` draws them as the paper's Figures 2a / 22a: every
    image in blue and the binomial of all images, the excluded ones in red as a share of all images;
    ``"separate"`` draws the kept images in blue and the excluded ones normalised among themselves.
    """
    _theme()
    histogram = histogram.sort_values("k")
    n_models = int(histogram["k"].max())
    names = {0: "None", n_models: "All"}
    excluded = "excluded_images" in histogram and histogram["excluded_images"].sum() > 0
    paper = excluded and errors == "paper" and "all" in histogram
    blue, green = ("all", "binomial_all") if paper else ("observed", "binomial")
    data = pd.DataFrame({"k": histogram["k"], "observed": histogram[blue], "binomial": histogram[green]}).melt(
        id_vars="k", value_vars=["observed", "binomial"], var_name="source", value_name="fraction")
    data["models correct"] = data["k"].map(lambda k: names.get(k, str(k)))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * (n_models + 1) + 1.5), 3))
    sns.barplot(data=data, x="models correct", y="fraction", hue="source", ax=ax,
                order=[names.get(k, str(k)) for k in range(n_models + 1)],
                palette={"observed": "#3182bd", "binomial": "#31a354"})
    ax.set_ylabel("fraction of images")
    ax.set_title(f"How many of {n_models} models classify an image correctly")
    if excluded:  # the paper's red label errors
        n_excluded = int(histogram["excluded_images"].sum())
        red = histogram["excluded_of_all" if paper else "excluded"].to_numpy()
        if paper:
            ax.bar(range(n_models + 1), red, width=0.4, color="#de2d26", label=f"excluded images (n = {n_excluded})")
        else:
            ax.plot(range(n_models + 1), red, color="#de2d26", marker="o", markersize=3, linewidth=1,
                    label=f"excluded images (n = {n_excluded}), share among them")
        ax.legend(fontsize="small")
        data = pd.concat([data, pd.DataFrame({"k": histogram["k"], "source": "excluded", "fraction": red,
                                              "models correct": histogram["k"].map(lambda k: names.get(k, str(k)))})],
                         ignore_index=True)
    _save(fig, out)
    return data[["source", "k", "models correct", "fraction"]]


def _fig02(args) -> pd.DataFrame:
    spec = json.loads(Path(args.experiment).read_text()) if args.experiment else {}
    return plot_histogram(_read_csv(args.histogram), args.out, spec.get("fig02_errors", "paper"))


def plot_conditions(conditions: pd.DataFrame, out: str | Path, order_by: pd.DataFrame | None = None) -> pd.DataFrame:
    """Figure 3: kappa of every member against its reference (all images), mean per condition in black.

    ``order_by``: the conditions table of another experiment; conditions are then ordered by its mean
    kappa, highest first (Figures 15 / 16 follow the ResNet-18 order), the others after them in config order.
    """
    _theme()
    data = conditions[conditions["set"] == "all"]
    order = list(dict.fromkeys(data["condition"]))
    if order_by is not None:
        reference = order_by[order_by["set"] == "all"].groupby("condition", sort=False)["kappa"].mean()
        ranked = [c for c in reference.sort_values(ascending=False, kind="stable").index if c in order]
        order = ranked + [c for c in order if c not in ranked]
    means = data.groupby("condition", sort=False)["kappa"].mean().reindex(order).reset_index()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(order) + 1.5), 3.2))
    positions = {condition: i for i, condition in enumerate(order)}
    x = data["condition"].map(positions).to_numpy(dtype=float)
    low = (data["kappa"] - data["ci_low"]).to_numpy()
    high = (data["ci_high"] - data["kappa"]).to_numpy()
    ax.errorbar(x, data["kappa"], yerr=np.nan_to_num(np.vstack([low, high])), fmt="o", color="0.6",
                ecolor="0.75", markersize=4, capsize=2, label="model (95% bootstrap CI)")
    ax.scatter(means.index, means["kappa"], color="black", marker="_", s=300, zorder=3, label="condition mean")
    ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
    ax.set_ylabel("error consistency (kappa)")
    ax.set_ylim(min(0.0, float(data[["kappa", "ci_low"]].min().min())) - 0.05, 1.05)  # NaN: undefined kappa
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.legend(loc="lower left", fontsize="small")
    ax.set_title("Error consistency with the base network")
    _save(fig, out)
    return means


def plot_decisions(difficulty: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Figure 4: decisions of the difficulty-set models on every image, images sorted by mean accuracy."""
    _theme()
    columns = [c for c in difficulty.columns if c.startswith("correct.")]
    order = np.argsort(-difficulty["fraction_correct"].to_numpy(), kind="stable")
    matrix = difficulty[columns].iloc[order].T
    matrix.index = [c.removeprefix("correct.") for c in columns]
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(columns) + 1.2))
    ax.imshow(1 - matrix.to_numpy(), aspect="auto", interpolation="nearest", cmap=CORRECT_WRONG_REDS,
              vmin=0, vmax=1)
    ax.set_yticks(range(len(columns)), matrix.index)
    ax.set_xlabel(f"images (n = {len(difficulty)}), sorted by mean accuracy across models")
    ax.set_title("Decisions per model: light = correct, dark = wrong")
    ax.grid(False)
    _save(fig, out)
    return matrix


def condition_matrix(kappa: pd.DataFrame) -> pd.DataFrame:
    """Mean kappa over the pairs of members of two conditions (one set, one epoch).

    The diagonal is the mean within a condition, or 1 where the condition has one model (as in
    the paper's Figure 5). Conditions keep their order of appearance.
    """
    order = list(dict.fromkeys([*kappa["condition_a"], *kappa["condition_b"]]))
    both = pd.concat([kappa[["condition_a", "condition_b", "kappa"]],
                      kappa.rename(columns={"condition_a": "condition_b", "condition_b": "condition_a"})
                      [["condition_a", "condition_b", "kappa"]]])
    off_diagonal = both[both["condition_a"] != both["condition_b"]]
    matrix = off_diagonal.pivot_table(index="condition_a", columns="condition_b", values="kappa", aggfunc="mean")
    matrix = matrix.reindex(index=order, columns=order)
    within = kappa[kappa["condition_a"] == kappa["condition_b"]].groupby("condition_a")["kappa"].mean()
    for condition in order:
        matrix.loc[condition, condition] = within.get(condition, 1.0)
    matrix.index.name, matrix.columns.name = None, None
    return matrix


def plot_kappa_heatmaps(kappa: pd.DataFrame, out: str | Path) -> dict[str, pd.DataFrame]:
    """Figure 5: condition x condition kappa at the last epoch, all images vs in-between images."""
    _theme()
    epoch = kappa["epoch"].max()
    final = kappa[kappa["epoch"] == epoch]
    matrices = {name: condition_matrix(final[final["set"] == name]) for name in ("all", "in_between")
                if (final["set"] == name).any()}
    low = min(0.0, *(float(np.nanmin(m.to_numpy())) for m in matrices.values()))
    size = len(next(iter(matrices.values())))
    fig, axes = plt.subplots(1, 2, figsize=(2 * (0.45 * size + 2.5), 0.45 * size + 2), squeeze=False)
    for ax, name in zip(axes[0], ("all", "in_between"), strict=True):
        if name not in matrices:
            ax.text(0.5, 0.5, "no in-between images", ha="center", va="center")
            ax.set_axis_off()
            continue
        sns.heatmap(matrices[name], ax=ax, vmin=low, vmax=1, cmap="viridis", square=True,
                    annot=size <= 14, fmt=".2f", annot_kws={"size": 6}, cbar_kws={"shrink": 0.7})
        ax.set_title(f"{'all images' if name == 'all' else 'in-between images'} (epoch {epoch})")
    _save(fig, out)
    return matrices


def plot_rsa(rsa: pd.DataFrame, members: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Figure 7: RSA of each condition's model with the base run's checkpoint, one bar colour per layer."""
    _theme()
    label, epoch, _ = rsa_reference(rsa, members)
    rows = rsa[(rsa["model_a"] == label) | (rsa["model_b"] == label)]
    other = np.where(rows["model_a"] == label, rows["condition_b"], rows["condition_a"])
    layer = rows["layer"].to_numpy() if "layer" in rows else "penultimate"
    data = pd.DataFrame({"condition": other, "layer": layer, "rsa": rows["rsa"].to_numpy()})
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * data["condition"].nunique() + 1.5), 3.2))
    sns.barplot(data=data, x="condition", y="rsa", hue="layer",
                palette=["#3182bd", "#fd8d3c"][:data["layer"].nunique()], ax=ax)
    ax.tick_params(axis="x", rotation=45)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    ax.set_ylabel("RSA (correlation of RDMs)")
    ax.set_ylim(min(0.0, float(data["rsa"].min())) - 0.05, 1.05)
    ax.set_title(f"RSA with the base run ({label}, epoch {epoch})")
    _save(fig, out)
    return data


def plot_base_epochs(correct: np.ndarray, epoch_kappa: pd.DataFrame, out: str | Path,
                     last: int | None = None) -> dict[str, np.ndarray]:
    """Figure 8: the base run's decisions per epoch (images sorted by mean accuracy) and kappa between epochs.

    ``correct``: (epochs, N) bool, row e = after epoch e. As in the paper, only epochs 1..``last``
    are shown (``last``: the comparison epoch E; None = every epoch after 0): not the untrained
    weights, not the extra epochs of the "+k epochs" members.
    """
    _theme()
    correct = np.asarray(correct, dtype=bool)
    last = len(correct) - 1 if last is None else min(int(last), len(correct) - 1)
    if last < 1:
        raise UserError(f"the base run has {len(correct) - 1} trained epochs; Figure 8 needs at least one")
    shown = correct[1:last + 1]
    order = np.argsort(-shown.mean(axis=0), kind="stable")
    decisions = shown[:, order].T  # images x epochs 1..last
    epochs = [e for e in sorted(set(epoch_kappa["epoch_a"]) | set(epoch_kappa["epoch_b"])) if 1 <= e <= last]
    epoch_kappa = epoch_kappa[epoch_kappa["epoch_a"].isin(epochs) & epoch_kappa["epoch_b"].isin(epochs)]
    matrix = pd.DataFrame(np.eye(len(epochs)), index=epochs, columns=epochs)
    for row in epoch_kappa.itertuples(index=False):
        matrix.loc[row.epoch_a, row.epoch_b] = matrix.loc[row.epoch_b, row.epoch_a] = row.kappa
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.imshow(1 - decisions, aspect="auto", interpolation="nearest", cmap=CORRECT_WRONG_BLUE, vmin=0, vmax=1,
                extent=(0.5, last + 0.5, len(decisions), 0))
    left.set_xlabel("epoch")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("images, sorted by mean accuracy over epochs")
    left.set_title("Base run decisions: white = correct, blue = wrong")
    left.grid(False)
    sns.heatmap(matrix, ax=right, cmap="viridis", vmax=1, square=True, cbar_kws={"shrink": 0.7},
                xticklabels=-(-len(epochs) // 10), yticklabels=-(-len(epochs) // 10))
    right.set_title("kappa between epochs of the base run")
    _save(fig, out)
    return {"decisions": decisions, "kappa": matrix.to_numpy()}


KL_SKIP_CLASSES = 20  # Figure 9 (right): "we skip the first 20 classes (with accuracy close to 1)"


def plot_kl_accuracy(kl: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Figure 9: KL(class i || class i+1), accuracy of class i, and the two against each other (classes from
    the 21st on, as the paper); returns the points of the scatter."""
    _theme()
    data = kl.dropna(subset=["kl_to_next"])
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[0].plot(data["class"], data["kl_to_next"], marker=".")
    axes[0].set(xlabel="class i", ylabel="KL(class i, class i+1) per value", yscale="log",
                title="KL divergence (eq. 1)")
    axes[1].plot(kl["class"], kl["accuracy"], marker=".", label="base")
    axes[1].plot(kl["class"], kl["mean_accuracy"], marker=".", alpha=0.6, label="mean of all models")
    axes[1].set(xlabel="class i", ylabel="accuracy", title="Class accuracy")
    axes[1].legend(fontsize="small")
    shown = data[data["class"] >= KL_SKIP_CLASSES]  # the paper's right panel skips the first 20 classes
    axes[2].scatter(shown["kl_to_next"], shown["accuracy"], c=shown["class"], cmap="viridis", s=14)
    axes[2].set(xlabel="KL(class i, class i+1) per value", ylabel="accuracy of class i", xscale="log",
                title=f"KL vs accuracy (classes {KL_SKIP_CLASSES + 1}+)")
    _save(fig, out)
    return shown


def plot_difficulty_models(profiles: pd.DataFrame, histograms: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Figure 10: A.9 difficulty profiles (a) and the histograms they give vs the observed one (b)."""
    _theme()
    shown = histograms[(histograms["statistic"] != "expected") | (histograms["model"] == "uniform")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    if len(profiles):
        sns.lineplot(data=profiles, x="p", y="weight", hue="model", ax=left)
    else:
        left.text(0.5, 0.5, "no profile matches this mean accuracy", ha="center", va="center")
    left.set(xlabel="difficulty p (probability that a model is right)", ylabel="share of images",
             title="(a) difficulty profiles")
    observed = shown[shown["statistic"] == "observed"]
    right.bar(observed["k"], observed["fraction"], color="#3182bd", alpha=0.6, label="observed")
    for (model, statistic), group in shown[shown["statistic"] != "observed"].groupby(["model", "statistic"],
                                                                                     sort=False):
        right.plot(group["k"], group["fraction"], marker="o", markersize=3, label=f"{model} ({statistic})")
    right.set(xlabel="models correct", ylabel="fraction of images", title="(b) histograms")
    right.legend(fontsize="small")
    _save(fig, out)
    return shown


def plot_decision_changes(changes: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Figure 17: decisions that change from epoch e to e + 1, last model of each condition."""
    _theme()
    last = changes.groupby("condition", sort=False)["member"].last()
    data = changes[changes["member"].isin(last)]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    sns.lineplot(data=data, x="epoch", y="changed", hue="condition", ax=ax)
    ax.set(xlabel="epoch e", ylabel="decisions changed from e to e + 1")
    ax.legend(fontsize="x-small", ncol=2)
    _save(fig, out)
    return data


def plot_class_accuracy(class_accuracy: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Figure 20: per-class accuracy of the base model, sorted decreasingly; range over all models shaded.

    Without a base member (external models only) the mean over the models takes its place.
    """
    _theme()
    wide = class_accuracy.pivot_table(index="class", columns="member", values="accuracy")
    reference = wide["base"] if "base" in wide.columns else wide.mean(axis=1)
    label = "base" if "base" in wide.columns else "mean of the models"
    order = np.argsort(-reference.to_numpy(), kind="stable")
    wide, reference = wide.iloc[order], reference.iloc[order]
    names = class_accuracy.drop_duplicates("class").set_index("class")["class_name"] \
        if "class_name" in class_accuracy else pd.Series(wide.index.astype(str), index=wide.index)
    readable = dict(zip(names.index, readable_names(names.to_numpy()), strict=True))
    data = pd.DataFrame({"class": wide.index, "class_name": [readable[c] for c in wide.index],
                         "rank": np.arange(len(wide)), "base": reference.to_numpy(),
                         "min": wide.min(axis=1).to_numpy(), "max": wide.max(axis=1).to_numpy()})
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.fill_between(data["rank"], data["min"], data["max"], color="0.8", label="range over all models")
    ax.plot(data["rank"], data["base"], color="#3182bd", marker="." if len(data) <= 100 else None, label=label)
    for row in pd.concat([data.head(3), data.tail(3)]).drop_duplicates("rank").itertuples():  # name the extremes
        ax.annotate(str(row.class_name), (row.rank, row.base), fontsize=6, rotation=30,
                    xytext=(2, 4 if row.rank < len(data) / 2 else -10), textcoords="offset points")
    ax.set(xlabel=f"classes, sorted by the accuracy of the {label}", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.legend(fontsize="small")
    _save(fig, out)
    return data


def plot_accuracy(members: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Figures 13 / 14: accuracy at E of every model (dots) and the mean of each condition (bars)."""
    _theme()
    order = list(dict.fromkeys(members["condition"]))
    means = members.groupby("condition", sort=False)["accuracy"].mean().reindex(order).reset_index()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(order) + 1.5), 3.2))
    ax.bar(range(len(order)), means["accuracy"], color="#9ecae1", label="condition mean")
    x = members["condition"].map({condition: i for i, condition in enumerate(order)})
    ax.scatter(x, members["accuracy"], color="#08519c", s=10, zorder=3, label="model")
    ax.axhline(members["accuracy"].mean(), color="0.3", linestyle="--", linewidth=0.8,
               label=f"mean of all models ({members['accuracy'].mean():.3f})")
    ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
    ax.set(ylabel="accuracy", ylim=(0, 1.02), title="Accuracy at the comparison epoch")
    ax.legend(fontsize="small", loc="lower right")
    _save(fig, out)
    return means


CATEGORY_COLOURS = {"trivial": "#74c476", "in_between": "#9ecae1", "impossible": "#de2d26"}


def plot_superclasses(superclasses: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Figure 11: share of trivial / in-between / impossible images within each superclass (each sums to 1),
    superclasses ordered by impossible / trivial; mean kappa of the difficulty set per superclass on the right."""
    _theme()
    shares = superclasses.pivot_table(index="superclass", columns="category", values="share_of_superclass")
    shares = shares.reindex(columns=list(CATEGORY_COLOURS), fill_value=0).fillna(0)
    ratio = shares["impossible"] / shares["trivial"].replace(0, np.nan)
    shares = shares.iloc[np.argsort(ratio.fillna(np.inf).to_numpy(), kind="stable")]
    kappa = superclasses.groupby("superclass")["kappa"].first().reindex(shares.index)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.3 * len(shares) + 1.5), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 1]})
    shares.plot.barh(stacked=True, ax=left, color=[CATEGORY_COLOURS[c] for c in shares.columns], width=0.8)
    left.set(xlabel="share of the superclass's images", ylabel="superclass", xlim=(0, 1))
    left.legend(fontsize="small", loc="lower right")
    right.scatter(kappa.to_numpy(), range(len(kappa)), color="0.2", s=12)
    right.set(xlabel="mean kappa (difficulty set)")
    _save(fig, out)
    return shares


def plot_superclass_categories(superclasses: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Figure 12: share of each category's images per superclass (each category sums to 1)."""
    _theme()
    shares = superclasses.pivot_table(index="superclass", columns="category", values="share_of_category")
    shares = shares.reindex(columns=list(CATEGORY_COLOURS)).fillna(0)
    data = shares.reset_index().melt(id_vars="superclass", var_name="category", value_name="share")
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(shares) + 1.5), 3.4))
    sns.barplot(data=data, x="superclass", y="share", hue="category", palette=CATEGORY_COLOURS, ax=ax)
    ax.tick_params(axis="x", rotation=60)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    ax.set(ylabel="share of the category's images", title="Superclasses within each image category")
    _save(fig, out)
    return data


def plot_label_ambiguity(ambiguity: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """A.13: share of images with an ambiguous label per category (of all, and of the rated images)."""
    _theme()
    data = ambiguity.melt(id_vars="category", value_vars=["fraction_ambiguous", "fraction_of_rated"],
                          var_name="of", value_name="fraction")
    data["of"] = data["of"].map({"fraction_ambiguous": "all images", "fraction_of_rated": "rated images"})
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.barplot(data=data, x="category", y="fraction", hue="of", ax=ax, palette=["#3182bd", "#9ecae1"])
    ax.set(ylabel="share with an ambiguous label", title="Label ambiguity per image category")
    _save(fig, out)
    return data


def plot_class_extremes(extremes: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Table 1 as a figure: accuracy of the easiest and hardest classes."""
    _theme()
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.3 * extremes["rank"].max() + 1.5))
    for ax, (side, colour) in zip(axes, (("easiest", "#74c476"), ("hardest", "#de2d26")), strict=True):
        part = extremes[extremes["side"] == side]
        ax.barh(range(len(part)), part["accuracy"], color=colour)
        ax.set_yticks(range(len(part)), part["label" if "label" in part else "class_name"].astype(str))
        ax.invert_yaxis()
        ax.set(xlim=(0, 1), xlabel="accuracy", title=f"{side} classes")
    _save(fig, out)
    return extremes


ANSWER_ORDER = {"q2": ["no", "maybe", "yes"], "q3": ["no", "slightly", "very"]}
QUESTIONS = {"q1": "object categories in the image", "q2": "is there a main category?",
             "q3": "is the presentation unusual?"}


def _answer_order(question: str, answers: pd.Series) -> list[str]:
    present = set(answers.astype(str))
    if question in ANSWER_ORDER:
        return [a for a in ANSWER_ORDER[question] if a in present]
    return sorted(present, key=int)


def plot_human_questions(table: pd.DataFrame, out: str | Path, share: str = "share_of_answer",
                         observers: bool = False, label_errors: str | None = None) -> pd.DataFrame:
    """Figures 6 / 25-28: answers of experiment 2, pooled (``observers=False``) or one row per observer.

    ``share="share_of_answer"``: the categories of each answer sum to 1 (Figure 6); ``"share_of_question"``:
    the answers of each question sum to 1 (Figures 25-28), coloured by category. ``label_errors``: the
    reading of human_questions.csv drawn (``kept``: Figures 25, 27; ``removed``: Figures 6, 26, 28).
    """
    _theme()
    if label_errors is not None:
        table = table[table["label_errors"] == label_errors]
    data = table if observers else table[table["observer"] == "all"]
    if observers:
        data = data[data["observer"] != "all"]
    rows = sorted(set(data["observer"])) or ["all"]
    fig, axes = plt.subplots(len(rows), 3, figsize=(11, 2.8 * len(rows) + 0.5), squeeze=False)
    for r, observer in enumerate(rows):
        for c, (question, title) in enumerate(QUESTIONS.items()):
            ax = axes[r, c]
            part = data[(data["observer"] == observer) & (data["question"] == question)].copy()
            if part.empty:
                ax.text(0.5, 0.5, "no answers", ha="center", va="center")
                ax.set_axis_off()
                continue
            part["answer"] = part["answer"].astype(str)
            sns.barplot(data=part, x="answer", y=share, hue="category", ax=ax, palette=CATEGORY_COLOURS,
                        order=_answer_order(question, part["answer"]),
                        hue_order=[c for c in CATEGORY_COLOURS if c in set(part["category"])])
            ax.set(title=f"{observer}: {title}" if observers else title, ylabel=share.replace("_", " "))
            if (r, c) != (0, 2):
                legend = ax.get_legend()
                if legend is not None:
                    legend.remove()
    _save(fig, out)
    return data


def plot_human_pairs(scores: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """Experiment 1: share of trials in which each observer picked the trivial image, and mean kappa."""
    _theme()
    data = scores[scores["observer"] != "all"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    if data.empty:
        for ax in (left, right):
            ax.text(0.5, 0.5, "no answer files yet", ha="center", va="center")
            ax.set_axis_off()
    else:
        left.bar(data["observer"].astype(str), data["accuracy"], color="#3182bd")
        left.axhline(0.5, color="0.4", linestyle="--", linewidth=0.8, label="chance")
        left.set(ylim=(0, 1), ylabel="picked the trivial image", title="Which image is easier? (2AFC)")
        left.legend(fontsize="small")
        right.bar(data["observer"].astype(str), data["mean_kappa"], color="#9ecae1")
        right.set(ylabel="mean kappa with the other observers", title="Consistency between observers")
        for ax in (left, right):
            ax.tick_params(axis="x", rotation=45)
    _save(fig, out)
    return data


def plot_pairs(pairs: pd.DataFrame, images: Path, out: str | Path, n: int = 6) -> pd.DataFrame:
    """Figures 18 / 19: the first ``n`` pairs of experiment 1, impossible images on top, trivial below."""
    from PIL import Image

    _theme()
    shown = pairs.head(n)
    fig, axes = plt.subplots(2, max(1, len(shown)), figsize=(1.8 * max(1, len(shown)), 4), squeeze=False)
    for i, row in enumerate(shown.itertuples()):
        for r, image_id in enumerate((row.impossible_id, row.trivial_id)):
            with Image.open(Path(images) / f"{image_id}.png") as picture:
                axes[r, i].imshow(np.asarray(picture.convert("RGB")), interpolation="nearest")
            axes[r, i].set_axis_off()
    axes[0, 0].set_title("impossible (top) / trivial (bottom)", loc="left", fontsize="small")
    _save(fig, out)
    return shown


def _base_epochs(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Figure 8 from the base run's dump: the experiment's split, epochs 1..E, without ``exclude_ids``."""
    spec = read_experiment(args.experiment, KEYS)
    run = split_excluded(read_dump(args.predictions, spec["split"], "all"), spec)[0]
    return plot_base_epochs(run.correct[0], _read_csv(args.epoch_kappa), args.out, spec["epochs"])


def _read_csv(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read table {path} ({err}); rebuild it with snakemake") from None


# What each figure's subcommand draws; its options come from its declaration (rules.ANALYSES).
FIGURES = {
    "fig02_histogram": _fig02,
    "fig03_conditions": lambda a: plot_conditions(
        _read_csv(a.conditions), a.out, _read_csv(a.order) if a.order else None),
    "fig04_decisions": lambda a: plot_decisions(_read_csv(a.difficulty), a.out),
    "fig05_kappa_heatmaps": lambda a: plot_kappa_heatmaps(_read_csv(a.kappa), a.out),
    "fig07_rsa": lambda a: plot_rsa(_read_csv(a.rsa), _read_csv(a.members), a.out),
    "fig08_base_epochs": lambda a: _base_epochs(a),
    "fig13_accuracy": lambda a: plot_accuracy(_read_csv(a.members), a.out),
    "fig11_superclasses": lambda a: plot_superclasses(_read_csv(a.superclasses), a.out),
    "fig12_superclass_categories": lambda a: plot_superclass_categories(_read_csv(a.superclasses), a.out),
    "a13_label_ambiguity": lambda a: plot_label_ambiguity(_read_csv(a.ambiguity), a.out),
    "fig06_human_questions": lambda a: plot_human_questions(_read_csv(a.questions), a.out, label_errors="removed"),
    "fig25_human_answers": lambda a: plot_human_questions(
        _read_csv(a.questions), a.out, share="share_of_question", label_errors="kept"),
    "fig26_human_answers": lambda a: plot_human_questions(
        _read_csv(a.questions), a.out, share="share_of_question", label_errors="removed"),
    "fig27_human_observers": lambda a: plot_human_questions(
        _read_csv(a.questions), a.out, share="share_of_question", observers=True, label_errors="kept"),
    "fig28_human_observers": lambda a: plot_human_questions(
        _read_csv(a.questions), a.out, share="share_of_question", observers=True, label_errors="removed"),
    "human_pairs": lambda a: plot_human_pairs(_read_csv(a.scores), a.out),
    "fig18_pairs": lambda a: plot_pairs(_read_csv(f"{a.human}/pairs.csv"), Path(a.human) / "images", a.out),
    "table1_class_extremes": lambda a: plot_class_extremes(_read_csv(a.extremes), a.out),
    "fig09_kl_accuracy": lambda a: plot_kl_accuracy(_read_csv(a.kl), a.out),
    "fig10_difficulty_models": lambda a: plot_difficulty_models(
        _read_csv(a.profiles), _read_csv(a.histograms), a.out),
    "fig17_decision_changes": lambda a: plot_decision_changes(_read_csv(a.changes), a.out),
    "fig20_class_accuracy": lambda a: plot_class_accuracy(_read_csv(a.class_accuracy), a.out),
}


# --order: conditions.csv of the experiment to order by; --spec: experiment.json (fig02_errors)
OPTIONAL = {"fig03_conditions": ("order",), "fig02_histogram": ("experiment",)}


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.splitlines()[0])
    add_parsers(parser, ANALYSES, "ddd.figures", OPTIONAL)  # the options of each figure: its declaration
    args = parser.parse_args(argv)
    FIGURES[args.function](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
