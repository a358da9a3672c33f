"""Images in and label maps out, in the input's own format and geometry (backs ``ssl-bench predict``).

Inputs (:func:`inspect_image`, :func:`read_image`):

* NIfTI (``.nii``, ``.nii.gz``, nibabel): a 3D volume ``(x, y, z)`` or a 2D image ``(x, y)``; trailing singleton
  axes are dropped, a 4th axis longer than 1 is a channel axis. The array is returned as ``(Z, Y, X)`` (transposed,
  as the ACDC loader does); the affine and header are kept for the output.
* HDF5 (``.h5``, ``.hdf5``, the SSL4MIS layout): dataset ``image`` of shape ``(Z, H, W)`` or ``(H, W)``, as stored;
  an ``image`` attribute ``spacing`` is kept for the output.

Outputs (:func:`write_label_map`): the label map ``(Z, Y, X)`` is written back in the input's format under the
input's file name: NIfTI with the input's affine and header (voxel sizes, orientation; data type uint8), in the
input's axis order and shape; HDF5 with a dataset ``label`` in the input's ``image`` shape (and the spacing as an
attribute, read back by ``ssl-bench metrics``). Probabilities ``[K, Z, Y, X]`` go into the HDF5 file (dataset
``probabilities``, ``[K, *label shape]``) or, for NIfTI, beside it as ``<name>.npz`` (array ``probabilities``,
``[K, *label array shape]`` in the NIfTI's axis order, so ``probabilities.argmax(0)`` is the label map).
Every file is written atomically.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench.core.errors import DataError
from ssl_bench.core.io import atomic_path, atomic_write

IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".h5", ".hdf5")
H5_IMAGE, H5_LABEL, H5_PROBS = "image", "label", "probabilities"


def image_extension(path: Path) -> str | None:
    """The supported extension of ``path`` (``.nii.gz`` before ``.nii``), or None."""
    name = path.name.lower()
    return next((ext for ext in IMAGE_EXTENSIONS if name.endswith(ext)), None)


@dataclass
class ImageFile:
    """An input file's format and geometry. ``shape``: the stored array's shape (NIfTI: nibabel's axis order);
    ``spacing``: an HDF5 image's ``spacing`` attribute (NIfTI keeps its geometry in ``header``)."""

    path: Path
    kind: str  # "nifti" or "h5"
    shape: tuple[int, ...]
    spacing: tuple[float, ...] | None = None
    header: Any = field(default=None, repr=False)  # NIfTI: the nibabel image (affine, header)

    @property
    def name(self) -> str:
        ext = image_extension(self.path) or ""
        return self.path.name[: len(self.path.name) - len(ext)]

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` of the volume read by :func:`read_image`."""
        spatial = _spatial(self.shape)
        if self.kind == "nifti":
            return (1, spatial[1], spatial[0]) if len(spatial) == 2 else (spatial[2], spatial[1], spatial[0])
        return (1, *spatial) if len(spatial) == 2 else spatial  # type: ignore[return-value]


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` without trailing singleton axes beyond the third (NIfTI ``(x, y, z, 1)`` -> ``(x, y, z)``)."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def inspect_image(path: Path, channels: int = 1) -> ImageFile:
    """Read an input's header only and check it is a single ``channels``-channel 2D or 3D image.

    Raises:
        DataError: unsupported extension, unreadable file, no ``image`` dataset, wrong number of axes or channels.
    """
    ext = image_extension(path)
    if ext is None:
        raise DataError(f"{path}: unsupported image file; use {', '.join(IMAGE_EXTENSIONS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if ext in (".nii", ".nii.gz"):
            import nibabel as nib

            img = nib.load(str(path))
            info = ImageFile(path, "nifti", tuple(int(s) for s in img.shape), header=img)
        else:
            import h5py

            with h5py.File(path, "r") as fh:
                if H5_IMAGE not in fh or not isinstance(fh[H5_IMAGE], h5py.Dataset):
                    raise DataError(f"{path}: no dataset {H5_IMAGE!r} (found {sorted(fh.keys()) or 'none'})")
                dset = fh[H5_IMAGE]
                spacing = dset.attrs.get("spacing")
                spacing = None if spacing is None else tuple(float(s) for s in np.ravel(spacing))
                info = ImageFile(path, "h5", tuple(int(s) for s in dset.shape), spacing)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel/h5py raise many types for a bad file
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    spatial = _spatial(info.shape)
    axes = "(x, y[, z])" if info.kind == "nifti" else "(Z, H, W) or (H, W)"
    if len(spatial) == 4 and info.kind == "nifti":
        raise DataError(
            f"{path}: {spatial[3]} channels (shape {info.shape}); the run's model takes {channels}. "
            "Pass one channel per file"
        )
    if len(spatial) not in (2, 3) or min(spatial) < 1:
        raise DataError(f"{path}: image of shape {info.shape}; expected a single-channel 2D or 3D image {axes}")
    if channels != 1:
        raise DataError(f"{path}: the run's model takes {channels} channels; file input supports 1 (use --split)")
    return info


def read_image(info: ImageFile) -> np.ndarray:
    """The image as a ``(Z, Y, X)`` float32 volume (a 2D image is one slice), intensities as stored."""
    try:
        if info.kind == "nifti":
            arr = np.asarray(info.header.dataobj, dtype=np.float32).reshape(_spatial(info.shape))
            vol = arr.T[None] if arr.ndim == 2 else np.transpose(arr, (2, 1, 0))
        else:
            import h5py

            with h5py.File(info.path, "r") as fh:
                vol = np.asarray(fh[H5_IMAGE][()], dtype=np.float32).reshape(_spatial(info.shape))
            vol = vol[None] if vol.ndim == 2 else vol
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{info.path}: cannot read image data ({type(exc).__name__}: {exc})") from exc
    if not np.isfinite(vol).all():
        raise DataError(f"{info.path}: image holds NaN or inf values")
    return np.ascontiguousarray(vol)


def _to_stored(info: ImageFile, volume: np.ndarray) -> np.ndarray:
    """A ``(..., Z, Y, X)`` array back in the input's stored axis order and shape (leading axes kept)."""
    lead = volume.shape[:-3]
    spatial = _spatial(info.shape)
    if info.kind == "nifti":
        arr = np.swapaxes(volume, -1, -3)  # (..., X, Y, Z)
        if len(spatial) == 2:
            arr = arr[..., 0]
        return np.ascontiguousarray(arr.reshape(*lead, *info.shape))
    return np.ascontiguousarray(volume.reshape(*lead, *info.shape))


def write_label_map(info: ImageFile, label: np.ndarray, folder: Path, probabilities: np.ndarray | None = None) -> Path:
    """Write ``label`` ``(Z, Y, X)`` (and ``probabilities`` ``[K, Z, Y, X]``) for input ``info`` into ``folder``
    under the input's file name; returns the label file's path."""
    out = folder / info.path.name
    stored = _to_stored(info, label.astype(np.uint8, copy=False))
    if info.kind == "nifti":
        import nibabel as nib

        img = nib.Nifti1Image(stored, info.header.affine, header=info.header.header.copy())
        img.set_data_dtype(np.uint8)
        img.header.set_slope_inter(1.0, 0.0)
        data = img.to_bytes()
        atomic_write(out, lambda fh: fh.write(gzip.compress(data, 6) if out.name.endswith(".gz") else data))
        if probabilities is not None:
            probs = _to_stored(info, probabilities.astype(np.float32, copy=False))
            atomic_write(folder / f"{info.name}.npz", lambda fh: np.savez_compressed(fh, probabilities=probs))
        return out
    write_h5_label(out, stored, info.spacing, None if probabilities is None else _to_stored(info, probabilities))
    return out


def write_h5_label(
    path: Path, label: np.ndarray, spacing: tuple[float, ...] | None, probabilities: np.ndarray | None = None
) -> None:
    """An HDF5 file with dataset ``label`` (uint8, attribute ``spacing`` when known) and optionally
    ``probabilities`` (float32), written atomically."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        dset = fh.create_dataset(H5_LABEL, data=label.astype(np.uint8, copy=False), compression="gzip")
        if spacing is not None:
            dset.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)
        if probabilities is not None:
            fh.create_dataset(H5_PROBS, data=probabilities.astype(np.float32, copy=False), compression="gzip")
