"""Shared pieces of the real-data adapters: file readers with errors that name the file, committed split files and
their protocols, the prepared-cache format written by ``ssl-bench data prepare``, and the integrity check behind
``ssl-bench data check``.

Split files (``datasets/splits/<name>.json``, committed data; ids only)::

    {
      "format": "ssl-bench-splits", "version": 1, "dataset": "acdc", "group_by": "patient",
      "description": "...", "source": "where the lists come from",
      "split": {"train": [patient ids, in protocol order], "val": [...], "test": [...]},
      "protocols": {
        "<name>": {"selection": "first", "description": "...", "order": [train patients],
                   "labelled": {"7": [...], "14": [...]}},          # nested: each budget a prefix of "order"
        "<name>": {"selection": "random", "description": "...", "rule": "...",
                   "seeds": {"0": {"order": [...], "labelled": {"14": [...]}}, "1": {...}, "2": {...}}}
      }
    }

``dataset.selection`` picks the protocol: ``first`` takes the first N patients of the ``first`` protocol's order,
``random`` the first N of the seed's order (:func:`seeded_order`, pinned in the file for the listed seeds and
computed by the same rule for any other seed), so budgets are nested within a protocol and seed. A run records the
file's sha256 (:meth:`RealDataset.split_info`).

Prepared cache (``ssl-bench data prepare NAME --source RAW --data-root DIR``)::

    DIR/dataset.json         name, source, licence, labels, spacing unit, preprocessing (+ hash), split file,
                             and per case: file, shape, spacing, group, sha256
    DIR/cases/<case id>.h5   'image' (Z, Y, X) float32, 'label' (Z, Y, X) uint8, gzip, one chunk per slice;
                             attrs: case_id, group, spacing (absent if unknown), preprocessing_hash, meta (JSON)

Every case file is written to a temporary name and renamed; ``dataset.json`` is written last, so a folder
without it is an unfinished prepare (adapters refuse it and say so) and re-running ``prepare`` reuses the case
files already finished with the same preprocessing hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np

from ssl_bench.core.data import Case, DatasetAdapter, count_from_budget, validate_image, validate_label
from ssl_bench.core.errors import DataError
from ssl_bench.core.io import atomic_path, atomic_write_json

SPLITS_DIR = Path(__file__).resolve().parent / "splits"
SPLIT_FORMAT = "ssl-bench-splits"
PREPARED_FORMAT = "ssl-bench-prepared"
PREPARED_VERSION = 1


# -- small helpers --------------------------------------------------------------------------------------------


def natural_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers numerically (``pat2`` < ``pat10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(data: Any) -> str:
    """sha256 of the canonical JSON of ``data``."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def minmax(volume: np.ndarray) -> np.ndarray:
    """Min-max normalisation to [0, 1] (float32); a constant volume becomes zeros."""
    volume = volume.astype(np.float32, copy=False)
    lo, hi = float(volume.min()), float(volume.max())
    if hi <= lo:
        return np.zeros_like(volume, dtype=np.float32)
    return ((volume - lo) / (hi - lo)).astype(np.float32, copy=False)


def read_list(path: Path) -> list[str]:
    """Non-empty stripped lines of a ``*.list`` file."""
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise DataError(f"cannot read split list {path}: {exc}") from exc


def read_h5(path: Path, keys: Sequence[str] = ("image", "label")) -> list[np.ndarray]:
    """Datasets ``keys`` of an HDF5 file, with errors that name the file and what it contains."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        with h5py.File(path, "r") as fh:
            missing = [k for k in keys if k not in fh]
            if missing:
                raise DataError(f"{path}: no dataset {missing} (found {sorted(fh.keys())})")
            return [fh[k][()] for k in keys]
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: not a readable HDF5 file, truncated or corrupt ({exc})") from exc


def load_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """Array (nibabel's axis order), voxel sizes and affine of a NIfTI file; errors name the file."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - nibabel/gzip/zlib raise many types for a bad file
        raise DataError(
            f"{path}: not a readable NIfTI file, truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc
    return np.asarray(data), zooms, affine


def seeded_order(patients: Iterable[str], seed: int) -> list[str]:
    """The ``random`` protocols' patient order: ``numpy.random.default_rng(seed).permutation`` of the naturally
    sorted ids (a labelled budget N is the first N; nested for a fixed seed)."""
    ids = sorted(patients, key=natural_key)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


# -- split files ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    name: str
    selection: str
    description: str
    order: list[str]  # for "first"; for "random" the rule is seeded_order
    seeds: dict[int, list[str]]  # pinned seed orders ("random")


@dataclass(frozen=True)
class SplitFile:
    path: Path
    sha256: str
    version: int
    dataset: str
    split: dict[str, list[str]]
    protocols: dict[str, Protocol]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def protocol(self, selection: str) -> Protocol:
        for proto in self.protocols.values():
            if proto.selection == selection:
                return proto
        if selection not in ("first", "random"):
            raise DataError(f"unknown labelled selection {selection!r}: use 'first' or 'random'")
        raise DataError(f"{self.path}: no protocol with selection {selection!r}")

    def order(self, selection: str, seed: int) -> list[str]:
        """Training patients in labelling order for ``selection`` (and ``seed`` if random)."""
        proto = self.protocol(selection)
        if proto.selection == "first":
            return list(proto.order)
        return list(proto.seeds.get(seed) or seeded_order(self.split["train"], seed))


def _check(cond: bool, path: Path, message: str) -> None:
    if not cond:
        raise DataError(f"split file {path}: {message}")


def load_split_file(name: str, directory: Path | None = None) -> SplitFile:
    """Read and validate ``datasets/splits/<name>.json`` (see module docstring)."""
    path = (directory or SPLITS_DIR) / f"{name}.json"
    try:
        text = path.read_bytes()
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from exc
    _check(data.get("format") == SPLIT_FORMAT, path, f"format must be {SPLIT_FORMAT!r}")
    _check(isinstance(data.get("version"), int), path, "needs an integer 'version'")
    split = data.get("split") or {}
    _check(set(split) == {"train", "val", "test"}, path, "'split' needs exactly train, val and test")
    _check(bool(split["train"]) and bool(split["test"]), path, "empty train or test split")
    seen: dict[str, str] = {}
    for name_, ids in split.items():
        for pid in ids:
            _check(pid not in seen, path, f"patient {pid} is in both {seen.get(pid)} and {name_}")
            seen[pid] = name_
    train = split["train"]
    protocols: dict[str, Protocol] = {}
    for pname, p in (data.get("protocols") or {}).items():
        selection = p.get("selection")
        _check(selection in ("first", "random"), path, f"protocol {pname}: selection must be 'first' or 'random'")
        budgets: list[tuple[str, list[str], list[str]]] = []
        seeds: dict[int, list[str]] = {}
        order = list(p.get("order") or [])
        if selection == "first":
            _check(sorted(order) == sorted(train), path, f"protocol {pname}: 'order' must be a permutation of train")
            budgets += [(f"{pname}/{k}", v, order) for k, v in (p.get("labelled") or {}).items()]
        else:
            for seed, entry in (p.get("seeds") or {}).items():
                seed_order = list(entry["order"])
                _check(
                    seed_order == seeded_order(train, int(seed)),
                    path,
                    f"protocol {pname} seed {seed}: 'order' differs from seeded_order(train, {seed})",
                )
                seeds[int(seed)] = seed_order
                budgets += [
                    (f"{pname}/seed{seed}/{k}", v, seed_order) for k, v in (entry.get("labelled") or {}).items()
                ]
        for where, ids, full in budgets:
            _check(ids == full[: len(ids)], path, f"labelled set {where} is not the first {len(ids)} of its order")
        protocols[pname] = Protocol(pname, selection, p.get("description", ""), order, seeds)
    _check(bool(protocols), path, "no protocols")
    return SplitFile(
        path, hashlib.sha256(text).hexdigest(), data["version"], data.get("dataset", name), split, protocols, data
    )


# -- dataset description --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """What ``ssl-bench data info`` prints and a missing-root error quotes."""

    title: str
    short: str  # name in messages, e.g. "ACDC"
    summary: str
    download: str
    licence: str
    citation: str
    layout: str  # expected folder layout, one entry per line


@dataclass
class CaseSummary:
    """What ``data check`` learns from one case (a volume, or a training volume's slices)."""

    case_id: str
    n_slices: int
    shapes: list[tuple[int, ...]]  # in-plane shapes (H, W) seen
    depth: int | None  # Z of the volume (None if only slices were read)
    label_values: set[int]
    spacing: tuple[float, ...] | None
    intensity: tuple[float, float]
    files: int = 1
    notes: list[str] = field(default_factory=list)


def summarize_case(case: Case) -> CaseSummary:
    labels = set() if case.label is None else {int(v) for v in np.unique(case.label)}
    image = case.image
    return CaseSummary(
        case.case_id,
        int(image.shape[0]),
        [tuple(int(s) for s in image.shape[1:])],
        int(image.shape[0]),
        labels,
        None if case.spacing is None else tuple(float(s) for s in case.spacing),
        (float(image.min()), float(image.max())) if image.size else (0.0, 0.0),
    )


# -- prepared cache -------------------------------------------------------------------------------------------


class PreparedStore:
    """Reader of a folder written by :func:`prepare_dataset`."""

    def __init__(self, root: Path, name: str, expected_hash: str | None = None) -> None:
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise DataError(
                f"{self.root} holds an unfinished `ssl-bench data prepare {name}` (cases/ but no dataset.json): "
                f"run the same prepare command again to finish it"
            )
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{meta_path}: unreadable ({exc}); rerun `ssl-bench data prepare {name} --force`") from exc
        if self.meta.get("format") != PREPARED_FORMAT:
            raise DataError(f"{meta_path}: not an ssl-bench prepared dataset (format {self.meta.get('format')!r})")
        if self.meta.get("name") != name:
            raise DataError(f"{self.root} holds the prepared dataset {self.meta.get('name')!r}, not {name!r}")
        if self.meta.get("format_version") != PREPARED_VERSION:
            raise DataError(
                f"{meta_path}: prepared with format version {self.meta.get('format_version')}, this ssl-bench reads "
                f"{PREPARED_VERSION}; rerun `ssl-bench data prepare {name} --force`"
            )
        if expected_hash is not None and self.meta.get("preprocessing_hash") != expected_hash:
            raise DataError(
                f"{self.root} was prepared with other preprocessing (hash "
                f"{str(self.meta.get('preprocessing_hash'))[:12]}, this version computes {expected_hash[:12]}): "
                f"rerun `ssl-bench data prepare {name} --force`"
            )
        self.cases: dict[str, dict[str, Any]] = self.meta.get("cases", {})

    @staticmethod
    def looks_prepared(root: Path) -> bool:
        """``dataset.json`` or an unfinished prepare's ``cases/`` folder."""
        return (root / "dataset.json").is_file() or (root / "cases").is_dir()

    def path(self, case_id: str) -> Path:
        if case_id not in self.cases:
            raise DataError(f"case {case_id!r} is not in {self.root / 'dataset.json'}")
        return self.root / self.cases[case_id]["file"]

    def load(self, case_id: str, num_classes: int, verify: bool = False) -> Case:
        entry = self.cases.get(case_id)
        path = self.path(case_id)
        if not path.is_file():
            raise DataError(f"missing file {path} (listed in {self.root / 'dataset.json'})")
        if verify and entry.get("sha256") and sha256_file(path) != entry["sha256"]:
            raise DataError(f"{path}: content differs from dataset.json (sha256 mismatch): truncated or modified")
        image, label = read_h5(path)
        if image.ndim != 3 or image.shape != label.shape or list(image.shape) != list(entry["shape"]):
            raise DataError(
                f"{path}: image {image.shape} / label {label.shape}, dataset.json says {tuple(entry['shape'])}"
            )
        label = validate_label(label, num_classes, str(path))
        validate_image(image, str(path))
        spacing = entry.get("spacing")
        return Case(
            case_id,
            image.astype(np.float32, copy=False),
            label,
            None if spacing is None else tuple(float(s) for s in spacing),
            entry.get("group", case_id),
            dict(entry.get("meta", {})),
        )


def _write_case_file(path: Path, case: Case, phash: str) -> None:
    chunks = (1, *case.image.shape[1:]) if case.image.ndim == 3 and case.image.size else None
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset(
            "image", data=case.image.astype(np.float32), compression="gzip", compression_opts=4, shuffle=True,
            chunks=chunks,
        )  # fmt: skip
        fh.create_dataset("label", data=case.label.astype(np.uint8), compression="gzip", chunks=chunks)
        fh.attrs["case_id"] = case.case_id
        fh.attrs["group"] = case.group
        fh.attrs["preprocessing_hash"] = phash
        fh.attrs["meta"] = json.dumps(case.meta, default=str)
        if case.spacing is not None:
            fh.attrs["spacing"] = np.asarray(case.spacing, dtype=np.float64)


def _finished_case(path: Path, phash: str) -> dict[str, Any] | None:
    """Entry of a case file a previous (interrupted) prepare finished with the same preprocessing, else None."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as fh:
            if fh.attrs.get("preprocessing_hash") != phash:
                return None
            shape = list(fh["image"].shape)
            if list(fh["label"].shape) != shape:
                return None
            spacing = fh.attrs.get("spacing")
            return {
                "shape": shape,
                "spacing": None if spacing is None else [float(s) for s in spacing],
                "group": str(fh.attrs.get("group", "")),
                "meta": json.loads(fh.attrs.get("meta", "{}")),
            }
    except (OSError, KeyError, ValueError):
        return None


def prepare_dataset(
    cls: type[RealDataset],
    source: Path,
    dest: Path,
    *,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> Path:
    """Convert ``source`` (a layout ``cls`` reads) into the prepared cache at ``dest`` (see module docstring).

    Idempotent: a finished cache of the same source and preprocessing is left as it is. An interrupted run leaves
    no ``dataset.json`` and is finished by running again. ``force`` rebuilds a cache made from another source or
    with other preprocessing (refused otherwise). A non-empty folder that is not a prepared cache is never written to.
    """
    source, dest = Path(source).expanduser().resolve(), Path(dest).expanduser().resolve()
    if source == dest:
        raise DataError("--source and --data-root are the same folder: prepare writes a separate cache folder")
    if PreparedStore.looks_prepared(source):
        raise DataError(f"{source} is already a prepared folder; use it directly with --data-root")
    src = cls(source)
    phash = src.preprocessing_hash()
    case_ids = src.all_case_ids()
    meta_path = dest / "dataset.json"
    if dest.exists() and not dest.is_dir():
        raise DataError(f"--data-root {dest} is a file, not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not PreparedStore.looks_prepared(dest):
        raise DataError(f"{dest} is not empty and is not a prepared ssl-bench folder: choose an empty --data-root")
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            old = {}
        same = (
            old.get("name") == cls.name
            and old.get("preprocessing_hash") == phash
            and old.get("source") == str(source)
            and sorted([*old.get("cases", {}), *old.get("skipped", {})]) == sorted(case_ids)
            and all((dest / e["file"]).is_file() for e in old.get("cases", {}).values())
        )
        if same:
            echo(f"{dest} is already prepared ({len(case_ids)} cases, preprocessing {phash[:12]}); nothing to do")
            return dest
        if not force:
            raise DataError(
                f"{dest} holds a prepared dataset from another source or preprocessing "
                f"({old.get('name')!r} from {old.get('source')!r}); pass --force to rebuild it"
            )
        meta_path.unlink()  # from here on the folder no longer looks complete
    cases_dir = dest / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    skipped: dict[str, str] = {}
    in_splits = {c for cases in src.safe_splits()[0].values() for c in cases}
    absent = sorted(in_splits - set(case_ids), key=natural_key)
    if absent:
        echo(f"note: {len(absent)} split cases are not in {source} ({_ellipsis(absent)}); `data check` will list them")
    reused = 0
    for i, cid in enumerate(case_ids, 1):
        path = cases_dir / f"{cid}.h5"
        entry = _finished_case(path, phash)
        if entry is not None:
            reused += 1
        else:
            try:
                case = src.load_case(cid)
                if case.label is None:
                    raise DataError(f"case {cid} has no label")
            except DataError as exc:
                if cid in in_splits:
                    failures.append(str(exc))
                    echo(f"  [{i}/{len(case_ids)}] {cid}: FAILED: {exc}")
                else:  # a case no protocol uses (e.g. an ACDC testing/ patient without ground truth)
                    skipped[cid] = str(exc)
                    echo(f"  [{i}/{len(case_ids)}] {cid}: skipped (in no split): {exc}")
                continue
            _write_case_file(path, case, phash)
            entry = {
                "shape": list(case.image.shape),
                "spacing": None if case.spacing is None else [float(s) for s in case.spacing],
                "group": case.group,
                "meta": json.loads(json.dumps(case.meta, default=str)),
            }
            echo(f"  [{i}/{len(case_ids)}] {cid}: {tuple(case.image.shape)}")
        entries[cid] = {"file": f"cases/{cid}.h5", **entry, "sha256": sha256_file(path)}
    if failures:
        raise DataError(
            f"prepare of {cls.name} failed for {len(failures)} of {len(case_ids)} cases (the others are kept; "
            f"dataset.json was not written): " + "; ".join(failures[:5]) + (" ..." if len(failures) > 5 else "")
        )
    from ssl_bench import __version__

    split = src.split_file
    atomic_write_json(
        meta_path,
        {
            "format": PREPARED_FORMAT,
            "format_version": PREPARED_VERSION,
            "name": cls.name,
            "title": cls.info.title,
            "source": str(source),
            "source_layout": src.layout,
            "download": cls.info.download,
            "licence": cls.info.licence,
            "citation": cls.info.citation,
            "modality": cls.spec.modality,
            "dims": cls.spec.dims,
            "labels": {str(i): n for i, n in enumerate(cls.spec.label_names)},
            "spacing_unit": src.spacing_unit,
            "preprocessing": src.preprocessing_params(),
            "preprocessing_hash": phash,
            "split_file": {
                "file": f"datasets/splits/{split.path.name}",
                "sha256": split.sha256,
                "version": split.version,
            },
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ssl_bench_version": __version__,
            "cases": entries,
            "skipped": skipped,
        },
    )
    echo(f"prepared {len(entries)} cases of {cls.name} in {dest} ({reused} reused from an earlier run)")
    return dest


# -- base class of the real-data adapters ---------------------------------------------------------------------


class RealDataset(DatasetAdapter):
    """Adapter over a user-supplied data folder in one of several layouts (raw, preprocessed, or prepared).

    Subclasses set ``name``, ``info``, ``split_name``, :meth:`_open_raw` (detect a raw layout, return its name),
    :meth:`_load_raw`, :meth:`_raw_case_ids` and :meth:`cases_of` (case ids of a patient).
    """

    name: ClassVar[str]
    info: ClassVar[DatasetInfo]
    split_name: ClassVar[str]

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)
        if self.root is None:
            raise DataError(self.missing(f"{self.info.short} root: no data folder given"))
        if not self.root.is_dir():
            raise DataError(self.missing(f"{self.info.short} root {self.root} is not a folder"))
        self.split_file = load_split_file(self.split_name)
        self.store: PreparedStore | None = None
        if PreparedStore.looks_prepared(self.root):
            self.store = PreparedStore(self.root, self.name)
            self.layout = str(self.store.meta.get("source_layout", "prepared"))
            expected = stable_hash(self._hash_payload(self.layout))
            if self.store.meta.get("preprocessing_hash") != expected:
                self.store = PreparedStore(self.root, self.name, expected)  # raises with the rerun hint
            self.spacing_unit = str(self.store.meta.get("spacing_unit", type(self).spacing_unit))
        else:
            self.layout = self._open_raw()

    # -- to implement -----------------------------------------------------------------------------------------

    def _open_raw(self) -> str:
        raise NotImplementedError

    def _load_raw(self, case_id: str) -> Case:
        raise NotImplementedError

    def _raw_case_ids(self) -> list[str]:
        """Every case the raw folder holds (split cases and any others)."""
        raise NotImplementedError

    def cases_of(self, patient: str) -> list[str]:
        return [patient]

    def layout_params(self, layout: str) -> dict[str, Any]:
        """Preprocessing of the arrays ``load_case`` returns for ``layout`` (hashed into prepared caches)."""
        return {}

    # -- generic --------------------------------------------------------------------------------------------------

    @property
    def prepared(self) -> bool:
        return self.store is not None

    @classmethod
    def missing(cls, problem: str) -> str:
        """One-line error text: the problem, the download page and the expected layout."""
        layout = " | ".join(" ".join(line.split()) for line in cls.info.layout.strip().splitlines())
        return (
            f"{problem}. Download: {cls.info.download}. Expected layout: {layout}; or a folder written by "
            f"`ssl-bench data prepare {cls.name} --source RAW_DIR --data-root DIR`. Give the folder with --data-root "
            f"DIR, ${cls.root_env} or $SSL_BENCH_DATA/{cls.name}; `ssl-bench data info {cls.name}` says more"
        )

    def _hash_payload(self, layout: str) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "format_version": PREPARED_VERSION,
            "layout": layout,
            **self.layout_params(layout),
        }

    def preprocessing_params(self) -> dict[str, Any]:
        return {"layout": self.layout, **self.layout_params(self.layout)}

    def preprocessing_hash(self) -> str:
        return stable_hash(self._hash_payload(self.layout))

    def splits(self) -> dict[str, list[str]]:
        return {k: [c for p in v for c in self.cases_of(p)] for k, v in self.split_file.split.items()}

    def patients(self, split: str) -> list[str]:
        return list(self.split_file.split[split])

    def group(self, case_id: str) -> str:
        if self.store is not None and case_id in self.store.cases:
            return str(self.store.cases[case_id].get("group", case_id))
        return case_id

    def safe_splits(self) -> tuple[dict[str, list[str]], list[str]]:
        """:meth:`splits`, skipping patients whose case list cannot be read; returns (splits, problems)."""
        try:
            return self.splits(), []
        except DataError:
            pass
        splits: dict[str, list[str]] = {}
        problems: list[str] = []
        for split, patients in self.split_file.split.items():
            splits[split] = []
            for pid in patients:
                try:
                    splits[split] += self.cases_of(pid)
                except DataError as exc:
                    problems.append(str(exc))
        return splits, problems

    def all_case_ids(self) -> list[str]:
        """Every case available (what ``prepare`` converts): split cases first, then the others, natural order."""
        available = list(self.store.cases) if self.store is not None else self._raw_case_ids()
        split_cases = [c for cases in self.splits().values() for c in cases]
        extra = sorted(set(available) - set(split_cases), key=natural_key)
        return [c for c in split_cases if c in set(available)] + extra

    def load_case(self, case_id: str) -> Case:
        if self.store is not None:
            return self.store.load(case_id, self.spec.num_classes)
        return self._load_raw(case_id)

    def labelled_patients(self, labeled: float | int, selection: str = "first", seed: int = 0) -> list[str]:
        """The first N patients of the split file's protocol for ``selection`` (and ``seed`` if ``random``)."""
        train = self.patients("train")
        n = count_from_budget(labeled, len(train))
        order = self.split_file.order(selection, seed)
        if sorted(order) != sorted(train):
            order = list(train) if selection == "first" else seeded_order(train, seed)
        return order[:n]

    def split_info(self, selection: str = "first") -> dict[str, Any]:
        """What a run records about its split: file, sha256, version, protocol."""
        sf = self.split_file
        try:
            protocol = sf.protocol(selection).name
        except DataError:
            protocol = None
        return {
            "file": f"datasets/splits/{sf.path.name}",
            "sha256": sf.sha256,
            "version": sf.version,
            "protocol": protocol,
            "layout": self.layout,
        }

    # -- integrity check ------------------------------------------------------------------------------------------

    def check_case(self, case_id: str, split: str) -> CaseSummary:
        """Load and summarise one case (``data check``); raises DataError naming the bad file."""
        if self.store is not None:
            case = self.store.load(case_id, self.spec.num_classes, verify=True)
        else:
            case = self.load_case(case_id)
        if case.label is None:
            raise DataError(f"case {case_id} has no label")
        if case.image.shape != case.label.shape:
            raise DataError(f"case {case_id}: image {case.image.shape} != label {case.label.shape}")
        return summarize_case(case)

    def check_extra(self) -> tuple[list[str], list[str]]:
        """(notes, problems) beyond the per-case checks: files in no split, duplicates, layout remarks."""
        notes: list[str] = []
        available = set(self.store.cases) if self.store is not None else set(self._raw_case_ids())
        split_cases = [c for cases in self.safe_splits()[0].values() for c in cases]
        extra = sorted(available - set(split_cases), key=natural_key)
        if extra:
            notes.append(f"{len(extra)} cases in the folder are in no split (not used): {_ellipsis(extra)}")
        return notes, []


def _ellipsis(items: Sequence[str], n: int = 6) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


# -- the check report -----------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    lines: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        out = list(self.lines)
        if self.problems:
            out.append(f"PROBLEMS ({len(self.problems)}):")
            out += [f"  - {p}" for p in self.problems]
        else:
            out.append("OK: no problems found")
        return "\n".join(out)


def _range(values: Sequence[float]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def check_dataset(adapter: DatasetAdapter, progress: Callable[[str], None] | None = None) -> CheckReport:
    """Integrity report of a dataset: patients, volumes and slices per split, shapes, label values, spacing
    ranges, missing, unreadable or duplicate cases, patients in two splits. Never raises on bad cases: every
    problem is listed (naming the file) and makes the report not OK."""
    name = getattr(adapter, "name", type(adapter).__name__)
    lines = [f"dataset: {name}  ({type(adapter).__name__}, {adapter.spec.num_classes} classes: "
             f"{', '.join(adapter.spec.label_names)})"]  # fmt: skip
    if adapter.root is not None:
        lines.append(f"folder: {adapter.root}  (layout: {getattr(adapter, 'layout', '?')})")
    problems: list[str] = []
    if isinstance(adapter, RealDataset):
        info = adapter.split_info()
        lines.append(f"split file: {info['file']} version {info['version']} sha256 {info['sha256'][:16]}")
    if isinstance(adapter, RealDataset):
        splits, split_problems = adapter.safe_splits()
        problems += split_problems
    else:
        try:
            splits = adapter.splits()
        except DataError as exc:
            return CheckReport(lines, [str(exc)])
    # duplicates and patient overlap
    owner: dict[str, str] = {}
    case_seen: dict[str, str] = {}
    for split, cases in splits.items():
        if not cases and split != "val":
            problems.append(f"split {split!r} is empty")
        for cid in cases:
            if cid in case_seen:
                problems.append(f"case {cid} is listed twice ({case_seen[cid]} and {split})")
            case_seen[cid] = split
            pid = adapter.group(cid)
            if owner.setdefault(pid, split) != split:
                problems.append(
                    f"patient {pid} is in two splits ({owner[pid]} and {split}): its frames straddle splits"
                )
    n_patients = len({adapter.group(c) for c in case_seen})
    counts = ", ".join(f"{s} {len(adapter.patients(s))}" for s in splits)
    lines.append(f"patients: {n_patients} ({counts})")
    header = (
        f"  {'split':<6} {'patients':>8} {'volumes':>8} {'slices':>7}  {'Z':>7}  {'labels':<14} in-plane sizes (H x W)"
    )
    table = [header]
    spacing_all: list[tuple[float, ...]] = []
    intensity = [np.inf, -np.inf]
    for split, cases in splits.items():
        summaries: list[CaseSummary] = []
        for cid in cases:
            if progress:
                progress(cid)
            try:
                if isinstance(adapter, RealDataset):
                    summaries.append(adapter.check_case(cid, split))
                else:
                    summaries.append(summarize_case(adapter.load_case(cid)))
            except DataError as exc:
                problems.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
                problems.append(f"case {cid}: {type(exc).__name__}: {exc}")
        shapes: dict[tuple[int, ...], int] = {}
        labels: set[int] = set()
        depths = [s.depth for s in summaries if s.depth is not None]
        for s in summaries:
            for sh in s.shapes:
                shapes[sh] = shapes.get(sh, 0) + 1
            labels |= s.label_values
            if s.spacing is not None:
                spacing_all.append(s.spacing)
            intensity = [min(intensity[0], s.intensity[0]), max(intensity[1], s.intensity[1])]
        top = sorted(shapes.items(), key=lambda kv: -kv[1])
        shape_text = ", ".join(f"{h}x{w}" for (h, w), _ in top[:3]) + (
            f" (+{len(top) - 3} more)" if len(top) > 3 else ""
        )
        label_text = str(sorted(labels)) if labels else "-"
        table.append(
            f"  {split:<6} {len(adapter.patients(split)):>8} {len(cases):>8} {sum(s.n_slices for s in summaries):>7}  "
            f"{_range(depths):>7}  {label_text:<14} {shape_text}"
        )
        bad_labels = sorted(v for v in labels if v >= adapter.spec.num_classes)
        if bad_labels:
            problems.append(f"split {split}: label values {bad_labels} outside 0..{adapter.spec.num_classes - 1}")
    lines += table
    if spacing_all:
        axes = list(zip(*spacing_all))
        lines.append("spacing (z, y, x) mm: " + " x ".join(_range(a) for a in axes))
    else:
        lines.append(f"spacing: none stored (distances in {adapter.spacing_unit}s)")
    if np.isfinite(intensity[0]):
        lines.append(f"intensity range: {intensity[0]:.4g} .. {intensity[1]:.4g}")
    if isinstance(adapter, RealDataset):
        notes, extra_problems = adapter.check_extra()
        lines += [f"note: {n}" for n in notes]
        problems += extra_problems
    return CheckReport(lines, list(dict.fromkeys(problems)))
