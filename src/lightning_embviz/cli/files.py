"""The files ``embviz`` reads besides the embeddings: REAL (raw or a saved reference), images.

Embedding and label files are read by :mod:`lightning_embviz._io` (shared with the
library); here are what only the command needs: :class:`RealSide` (REAL of report and
compare, resolving ``-k``) and :class:`ImageFile` (the image files of the galleries, read
on demand).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from lightning_embviz.cli.console import Progress
from lightning_embviz.cli.parser import DEFAULT_K

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ImageFile", "ImageFileError", "RealSide"]

_IMAGE_FORMATS = (".npy", ".npz", ".pt", ".pth")
_IMAGE_KEYS = ("images", "image", "x", "arr_0")


def _numeric(data: Any) -> bool:
    """A real-valued number (or bool) array or tensor."""
    import numpy as np

    dtype = data.dtype
    if isinstance(dtype, np.dtype):
        return dtype.kind in "biuf"  # object, str, complex refused
    return not getattr(dtype, "is_complex", True)  # torch: every other dtype is a number


class ImageFileError(ValueError):
    """An image file that cannot be used for a gallery (message is one line)."""


class ImageFile:
    """An image array opened for the galleries: checked shape, rows read on demand.

    ``.npy`` files are memory-mapped and ``.pt`` files loaded with ``mmap=True`` where
    possible, so only the images a gallery shows are read from disk.
    """

    def __init__(self, path: str, rows: int, flag: str, source: str) -> None:
        self.path = Path(path)
        self.flag = flag
        where = f"{flag} {path}"
        if not self.path.is_file():
            raise ImageFileError(f"{where}: no such file.")
        suffix = self.path.suffix.lower()
        if suffix not in _IMAGE_FORMATS:
            raise ImageFileError(
                f"{where}: unknown format {suffix or '(no extension)'!r} for images; expected "
                f"{', '.join(_IMAGE_FORMATS)} holding an array of shape (N, C, H, W) or (N, H, W)."
            )
        try:
            self.data = self._open(suffix)
        except ImageFileError:
            raise
        except Exception as err:  # any reader failure becomes a one-line message
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise ImageFileError(f"{where}: cannot read as {suffix} ({reason}).") from None
        shape = tuple(int(n) for n in self.data.shape)
        if not _numeric(self.data):
            raise ImageFileError(
                f"{where}: holds values of type {self.data.dtype}, expected numbers."
            )
        self.channels_last = False
        if len(shape) == 4 and shape[1] not in (1, 3) and shape[3] in (1, 3):
            self.channels_last = True
        elif len(shape) not in (3, 4) or (len(shape) == 4 and shape[1] not in (1, 3)):
            raise ImageFileError(
                f"{where}: has shape {shape}; images need shape (N, C, H, W) with C 1 or 3, "
                "(N, H, W), or (N, H, W, C)."
            )
        if shape[0] != rows:
            raise ImageFileError(
                f"{where}: holds {shape[0]} images but {source} has {rows} embedding rows; give "
                "one image per embedding row, in the same order."
            )

    def _open(self, suffix: str) -> Any:
        import numpy as np

        if suffix == ".npy":
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        if suffix == ".npz":
            with np.load(self.path, allow_pickle=False) as npz:
                return self._pick({k: npz[k] for k in npz.files})
        import torch

        try:
            obj = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            obj = torch.load(self.path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            obj = self._pick(obj)
        if not isinstance(obj, (torch.Tensor, np.ndarray)):
            raise ImageFileError(
                f"{self.flag} {self.path}: holds a {type(obj).__name__}, expected a tensor or a "
                "dict holding 'images'."
            )
        return obj

    def _pick(self, container: dict[str, Any]) -> Any:
        if len(container) == 1:
            return next(iter(container.values()))
        for key in _IMAGE_KEYS:
            if key in container:
                return container[key]
        raise ImageFileError(
            f"{self.flag} {self.path}: holds several arrays {sorted(container)}; name the one to "
            "use 'images'."
        )

    def take(self, rows: Any) -> np.ndarray:
        """The images of ``rows`` (int array) as (B, C, H, W) or (B, H, W)."""
        import numpy as np

        from lightning_embviz._arrays import as_numpy

        index = np.asarray(rows, dtype=np.int64)
        if isinstance(self.data, np.ndarray):
            out = np.asarray(self.data[index])
        else:  # a torch tensor
            import torch

            out = as_numpy(self.data[torch.from_numpy(index)])
        if self.channels_last:
            out = np.moveaxis(out, 3, 1)
        return out


class RealSide:
    """REAL of report/compare: an embeddings file, or a saved reference (radii already fitted).

    Resolves ``-k`` (default 5, or the reference's first fitted k; a k the reference was not
    fitted with is a one-line error) and fits the reference only when it is needed, once.
    """

    def __init__(self, path: str, nearest_k: Optional[int], progress: Progress) -> None:
        from lightning_embviz._arrays import as_numpy
        from lightning_embviz._io import is_reference_file, load_embeddings, load_reference

        self.path = path
        self.reference: Any = None
        self.saved = is_reference_file(path)
        if self.saved:
            self.reference = load_reference(path)
            fitted = self.reference.nearest_ks
            progress(f"{path} is a saved reference (fitted k: {', '.join(map(str, fitted))})")
            if nearest_k is not None and nearest_k not in fitted:
                listed = ",".join(str(k) for k in fitted)
                raise ValueError(
                    f"-k {nearest_k} was not fitted in the reference {path}; it holds k = "
                    f"{listed.replace(',', ', ')}: pick one of them, or add it with `embviz "
                    f"reference {path} -k {listed},{nearest_k} -o {path}`."
                )
            self.nearest_k = self.reference.nearest_k if nearest_k is None else nearest_k
            self.embeddings = as_numpy(self.reference.real)
            self.source = f"the reference {path}"
        else:
            self.embeddings = load_embeddings(path)
            self.nearest_k = DEFAULT_K if nearest_k is None else nearest_k
            self.source = path

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def width(self) -> int:
        """D, the width of the real embeddings."""
        return int(self.embeddings.shape[1])

    def fitted(self, progress: Progress) -> Any:
        """The :class:`~lightning_embviz.RealReference` (fitted here on first use if read raw)."""
        if self.reference is None:
            from lightning_embviz.engine.distributed import fit_reference_distributed

            progress(f"fitting the real set's k-NN radii (k={self.nearest_k}) on {len(self)} real")
            # One process: RealReference(embeddings, k); under torchrun each rank fits a share.
            self.reference = fit_reference_distributed(self.embeddings, self.nearest_k)
        return self.reference

    def describe(self) -> str:
        """How the real radii were obtained, for the printed summary."""
        if not self.saved:
            return ""
        fitted = ", ".join(str(k) for k in self.reference.nearest_ks)
        return f" (real radii from the saved reference, fitted k: {fitted})"
