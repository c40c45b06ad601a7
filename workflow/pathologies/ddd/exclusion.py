"""Images a DDD experiment leaves out, e.g. known label errors (Northcutt et al. 2021; Meding et al. 2022).

The experiment key ``exclude_ids`` names a file listing the images, by id or by file name:

- ids of the prepared split (the ``ids`` of the prediction dumps): a ``.npy`` integer array (read
  without pickle), a ``.csv`` file with a column ``image_id`` (or a single column of integers) or a
  ``.txt`` file with one integer a line. Ids that are not in the split are ignored and counted.
- file names, as Northcutt et al. publish the ImageNet label errors (``ILSVRC2012_val_00000001.JPEG``):
  a ``.npy`` string array, a ``.csv`` file with a column ``file_name`` (or a single column of names)
  or a ``.txt`` file with one name a line. They are converted to ids through the prepared dataset,
  which must keep file names (an ImageNet index): a name matches an image whose path relative to the
  image root is the name or ends with ``/<name>``. A name that matches no image, or several, is an error.

- a mask over the split, as Meding et al. publish the ImageNet label errors (``label_errors.npy``: float
  0/1 over the 50,000 validation images, 2,916 ones): one value per image of the prepared split, in its
  stored order (for ImageNet: the sorted class folders, then the sorted file names, as torchvision's
  ImageFolder lists them); 1 / True = leave the image out. A ``.npy`` array (bool, int or float) or a ``.csv``
  file with a column ``mask``.

In ``.txt`` files blank lines and lines starting with ``#`` are skipped. The experiment key ``exclude_format``
(``auto``, ``mask``, ``ids``, ``names``) says how to read the file; ``auto`` decides by type and length:
strings are file names, a bool array is a mask, a float array of 0/1 values is a mask, an int array of 0/1
values is a mask exactly when its length is the split's (a list of distinct ids that long cannot hold only
0 and 1), any other int array lists ids. Whatever cannot be read one way only is refused in one line
that says how to declare it: a float array with other values, an int 0/1 array of another length.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..io import read_h5
from ..training.predictions import Correctness


def read_entries(path: str | Path) -> np.ndarray:
    """The entries listed in ``path``: int64 ids or str file names (as listed); one-line errors otherwise."""
    path = Path(path)
    where = f"exclude_ids file {path}"
    if not path.exists():
        raise UserError(f"{where} does not exist; place it there or fix ddd.<experiment>.exclude_ids")
    if path.suffix == ".npy":
        try:
            entries = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise UserError(f"{where} is not a plain .npy array ({err}); save it with np.save") from None
    elif path.suffix == ".csv":
        try:
            table = pd.read_csv(path, dtype={"file_name": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise UserError(f"{where} is not a readable CSV file ({err})") from None
        columns = [name for name in ("image_id", "file_name", "mask") if name in table.columns]  # ids win
        if not columns and len(table.columns) != 1:
            raise UserError(f"{where} needs a column 'image_id', 'file_name' or 'mask' (has {list(table.columns)})")
        entries = (table[columns[0]] if columns else table.iloc[:, 0]).to_numpy()
    elif path.suffix == ".txt":
        try:
            lines = [line.strip() for line in path.read_text().splitlines()]
        except UnicodeDecodeError as err:
            raise UserError(f"{where} is not a UTF-8 text file ({err})") from None
        lines = [line for line in lines if line and not line.startswith("#")]
        entries = np.array([int(line) for line in lines] if all(_is_int(line) for line in lines) else lines)
    else:
        raise UserError(f"{where}: give a .npy, .csv or .txt file, not {path.suffix or 'a file without suffix'!r}")
    if entries.dtype == object and all(isinstance(entry, str) for entry in entries):
        entries = entries.astype(str)
    if entries.ndim != 1 or not (entries.dtype.kind in "iubfUS" or len(entries) == 0):
        raise UserError(f"{where} must hold a flat list of integer image ids or of file names, or a 0/1 mask "
                        f"(found {entries.dtype}, shape {entries.shape})")
    if entries.dtype.kind in "US":
        return entries.astype(str)
    return entries


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


FORMATS = ("auto", "mask", "ids", "names")


def entry_format(entries: np.ndarray, declared: str, n_images: int | None, where: str) -> str:
    """How to read ``entries``: ``mask``, ``ids`` or ``names`` (see the module docstring); ``n_images`` is the
    split's length (None: not known yet, e.g. before the dataset is prepared). One-line UserError otherwise."""
    if declared not in FORMATS:
        raise ValueError(f"exclude_format must be one of {FORMATS}, got {declared!r}")
    how = "declare ddd.<experiment>.exclude_format"
    kind = entries.dtype.kind
    zero_one = kind in "iubf" and len(entries) > 0 and bool(np.isin(entries, (0, 1)).all())
    if declared == "names" or (declared == "auto" and kind == "U"):
        if kind != "U":
            raise UserError(f"{where} is declared to list file names (exclude_format: names) but holds {entries.dtype} "
                            f"values; {how}: ids or mask")
        return "names"
    if kind == "U":
        raise UserError(f"{where} lists file names, not {'a mask' if declared == 'mask' else 'ids'}; {how}: names")
    if declared == "mask" or (declared == "auto" and (kind == "b" or (kind == "f" and zero_one))):
        if not zero_one and len(entries):
            raise UserError(f"{where} is read as a 0/1 mask but holds other values (e.g. "
                            f"{entries[~np.isin(entries, (0, 1))][0].item()!r}); {how}: ids if it lists image ids")
        if n_images is not None and len(entries) != n_images:
            raise UserError(f"{where} is a 0/1 mask of {len(entries)} values, but the split has {n_images} images; "
                            "a mask holds one value per image of the prepared split, in its order")
        return "mask"
    whole = kind in "iub" or (kind == "f" and bool(np.all(np.mod(entries, 1) == 0)))
    if not whole:
        raise UserError(f"{where} holds {entries.dtype} values that are neither integer image ids nor a 0/1 mask; "
                        "give integer ids, file names or a 0/1 mask")
    if declared == "auto" and zero_one and kind != "f":
        if n_images is None or len(entries) == n_images:
            return "mask"  # n_images is None: the dataset must come first; its length is checked when read
        raise UserError(f"{where} is an integer array of only 0 and 1 with {len(entries)} values, but the split has "
                        f"{n_images} images: a mask or the ids 0 and 1? {how}: mask (one value per image of the "
                        "split) or ids")
    return "ids"


def needs_dataset(path: str | Path, declared: str = "auto") -> bool:
    """Whether reading ``path`` needs the prepared dataset: file names and masks do (False for ids and for
    a file that cannot be read: the job that reads it reports that)."""
    try:
        entries = read_entries(path)
        return entry_format(entries, declared, None, f"exclude_ids file {path}") != "ids"
    except UserError:
        return False


def lists_names(path: str | Path) -> bool:
    """Whether ``path`` lists file names (False for ids and for a file that cannot be read)."""
    try:
        return read_entries(path).dtype.kind == "U"
    except UserError:
        return False


def ids_of_names(names: np.ndarray, dataset: str | Path, split: str, where: str) -> np.ndarray:
    """The ids of split ``split`` of ``dataset`` whose image paths match ``names``: a path matches a name
    when it equals it or ends with ``/<name>``. One-line error for a name that matches no image, or several."""
    with read_h5(dataset, "prepared dataset") as handle:
        if split not in handle:
            raise UserError(f"{where} lists file names of split {split!r}, but {dataset} has only {sorted(handle)}")
        if "paths" not in handle[split]:
            raise UserError(f"{where} lists file names, but {dataset} keeps no file names (its images are stored "
                            "as arrays); list the split's image ids instead (for CIFAR-10: test-set indices)")
        paths = handle[split]["paths"].asstr()[()]
        ids = handle[split]["ids"][()]
    by_suffix: dict[str, list[int]] = {}
    for path, image_id in zip(paths, ids, strict=True):
        parts = str(path).replace("\\", "/").split("/")
        for start in range(len(parts)):
            by_suffix.setdefault("/".join(parts[start:]), []).append(int(image_id))
    wanted = [str(name).strip().replace("\\", "/").strip("/") for name in names]
    missing = [name for name in wanted if name not in by_suffix]
    if missing:
        raise UserError(f"{where}: {len(missing)} of {len(wanted)} file names are not images of split {split!r} of "
                        f"{dataset}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; "
                        "check that the list belongs to this dataset")
    ambiguous = [name for name in wanted if len(by_suffix[name]) > 1]
    if ambiguous:
        raise UserError(f"{where}: file names {', '.join(ambiguous[:5])}{' ...' if len(ambiguous) > 5 else ''} "
                        f"match several images of split {split!r} of {dataset}; give their paths from the "
                        "class folder on (e.g. n01440764/<name>)")
    return np.array([by_suffix[name][0] for name in wanted], dtype=np.int64)


def read_ids(path: str | Path, dataset: str | Path | None = None, split: str = "test",
             declared: str = "auto") -> np.ndarray:
    """The distinct image ids listed in ``path``, sorted int64; file names and masks are converted through split
    ``split`` of the prepared ``dataset`` (``declared``: ``exclude_format``). One-line errors otherwise."""
    entries = read_entries(path)
    where = f"exclude_ids file {path}"
    form = entry_format(entries, declared, None, where)
    if form == "mask" and dataset is not None:  # the split's length decides (and checks) a mask
        from ..data.layout import load_labels

        split_ids = load_labels(dataset, split)[0]
        form = entry_format(entries, declared, len(split_ids), where)
    if form != "ids" and dataset is None:
        raise UserError(f"{where} is read as {'file names' if form == 'names' else 'a mask'}, and no prepared dataset "
                        "is given to convert it to image ids; rebuild the experiment description with snakemake")
    if form == "names":
        entries = ids_of_names(entries, dataset, split, where)
    elif form == "mask":
        entries = split_ids[entries.astype(bool)]
    return np.unique(entries.astype(np.int64))


def excluded_ids(spec: dict) -> np.ndarray:
    """The ids an experiment excludes (empty when ``exclude_ids`` is not set)."""
    path = spec.get("exclude_ids")
    if not path:
        return np.zeros(0, dtype=np.int64)
    return read_ids(path, spec.get("dataset_file"), spec["split"], spec.get("exclude_format", "auto"))


def split_excluded(data: Correctness, spec: dict, excluded: np.ndarray | None = None
                   ) -> tuple[Correctness, Correctness]:
    """(kept, excluded) images of ``data``: the columns whose id is not / is in the experiment's ``exclude_ids``
    (``excluded``: those ids, when already read). Excluding every image is a UserError naming the list."""
    excluded = excluded_ids(spec) if excluded is None else excluded
    drop = np.isin(data.ids, excluded)
    if drop.size and drop.all():
        raise UserError(f"exclude_ids file {spec.get('exclude_ids')} of experiment {spec.get('name')!r} excludes all "
                        f"{drop.size} images of split {spec.get('split')!r}: no images are left to analyse; shorten "
                        f"the list or remove ddd.{spec.get('name')}.exclude_ids")

    def columns(mask: np.ndarray) -> Correctness:
        return replace(data, ids=data.ids[mask], targets=data.targets[mask], correct=data.correct[..., mask],
                       predictions=None if data.predictions is None else data.predictions[..., mask])

    return columns(~drop), columns(drop)
