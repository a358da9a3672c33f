"""Checks of the data a run will evaluate, done before its run folder exists.

The training data are loaded (and checked by the adapters' readers) when the trainer is built; this opens every
validation and test case once more so that a broken *test* file fails in seconds, not after the whole training.
"""

from __future__ import annotations

from ssl_bench.core.config import RunConfig
from ssl_bench.core.data import DatasetAdapter, check_case
from ssl_bench.core.errors import DataError


def eval_cases(cfg: RunConfig, adapter: DatasetAdapter) -> dict[str, list[str]]:
    """The case ids a run validates on (``eval.val_cases`` of them) and tests on."""
    splits = adapter.splits()
    val = list(splits.get("val") or [])
    if cfg.eval.val_cases:
        val = val[: cfg.eval.val_cases]
    return {"val": val if cfg.trainer.val_every else [], "test": list(splits.get("test") or [])}


def check_eval_data(cfg: RunConfig, adapter: DatasetAdapter) -> int:
    """Load and check (:func:`~ssl_bench.core.data.check_case`) every val and test case; returns how many.

    Raises:
        DataError: the first bad case, naming its file and split.
    """
    check_patient_disjoint(adapter)
    n = 0
    for split, cases in eval_cases(cfg, adapter).items():
        for cid in cases:
            try:
                case = adapter.load_case(cid)
                check_case(case, adapter.spec.num_classes)
            except DataError as exc:
                raise DataError(f"{split} case {cid}: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - a reader's own error type; name the case
                raise DataError(f"{split} case {cid} cannot be loaded: {type(exc).__name__}: {exc}") from exc
            n += 1
    return n


def check_patient_disjoint(adapter: DatasetAdapter) -> None:
    """A patient in two splits (e.g. a test volume also listed for training) would leak test data into training.

    Raises:
        DataError: naming the patient and both splits.
    """
    owner: dict[str, str] = {}
    for split, cases in adapter.splits().items():
        for cid in cases:
            patient = adapter.group(cid)
            if owner.setdefault(patient, split) != split:
                raise DataError(
                    f"patient {patient} is in both the {owner[patient]} and the {split} split ({cid}): the splits "
                    "must be patient-disjoint; fix the split lists"
                )
