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

__all__ = ["EmbeddedFile", "ImageFile", "ImageFileError", "RealSide", "embed_files", "embed_paths"]

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

    def __init__(self, path: str, rows: Optional[int], flag: str, source: str) -> None:
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
        if rows is not None and shape[0] != rows:
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

    def __init__(
        self,
        path: str,
        nearest_k: Optional[int],
        progress: Progress,
        embeddings: Optional[np.ndarray] = None,
    ) -> None:
        from lightning_embviz._arrays import as_numpy
        from lightning_embviz._io import is_reference_file, load_embeddings, load_reference

        self.path = path
        self.reference: Any = None
        self.saved = embeddings is None and is_reference_file(path)
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
        else:  # read, or computed from the samples in `path` (--embedder)
            self.embeddings = load_embeddings(path) if embeddings is None else embeddings
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


class EmbeddedFile:
    """A file of samples (images or waveforms) and its embeddings (``--embedder``).

    Attributes:
        embeddings: (N, D) float32 or float64, one row per sample, in file order.
        images: the file opened as an :class:`ImageFile` for the galleries (images only),
            else None.
    """

    def __init__(self, embeddings: np.ndarray, images: Optional[ImageFile]) -> None:
        self.embeddings = embeddings
        self.images = images


class _Rows:
    """Slices of a sample array as tensors, read on demand (for ``embed_in_batches``)."""

    def __init__(self, take: Any, count: int) -> None:
        self._take, self._count = take, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, rows: slice) -> Any:
        import numpy as np
        import torch

        index = np.arange(self._count)[rows]
        return torch.from_numpy(np.ascontiguousarray(self._take(index)))


def _waveforms(path: str, flag: str) -> Any:
    """A waveform file (N, T) or (N, C, T): .npy, .npz or .pt/.pth."""
    import numpy as np

    from lightning_embviz._arrays import as_numpy

    file = ImageFile.__new__(ImageFile)  # the same readers, not the image shape check
    file.path, file.flag = Path(path), flag
    if not file.path.is_file():
        raise ImageFileError(f"{flag} {path}: no such file.")
    suffix = file.path.suffix.lower()
    if suffix not in _IMAGE_FORMATS:
        raise ImageFileError(
            f"{flag} {path}: unknown format {suffix or '(no extension)'!r} for audio; expected "
            f"{', '.join(_IMAGE_FORMATS)} holding waveforms of shape (N, T) or (N, C, T)."
        )
    data = as_numpy(file._open(suffix))
    if data.ndim not in (2, 3) or not _numeric(data):
        raise ImageFileError(
            f"{flag} {path}: has shape {tuple(data.shape)} ({data.dtype}); waveforms need "
            "numbers of shape (N, T) or (N, C, T)."
        )
    return np.asarray(data)


def embed_files(
    spec: str, real: str, fake: str, progress: Progress, batch_size: int = 64
) -> tuple[EmbeddedFile, EmbeddedFile]:
    """Embed the sample files REAL and FAKE with the embedder that ``spec`` names.

    The files of ``embviz report``; :func:`embed_paths` embeds any number.

    Args:
        spec: ``--embedder``, e.g. ``"dinov2:facebook/dinov2-base"`` or ``"module:net.pt"``
            (:func:`lightning_embviz.embedders.from_spec`).
        real: images (N, C, H, W), (N, H, W) or (N, H, W, C), uint8 or float, or waveforms
            (N, T) / (N, C, T) for an audio embedder (``.modality == "audio"``).
        fake: the same for the generated samples.
        progress: progress messages.
        batch_size: rows per forward pass.

    Returns:
        ``(real, fake)``: each file's embeddings, and its images for the galleries.

    Raises:
        ImageFileError: For a file that cannot be read as samples.
        ValueError: For a bad ``spec``, or samples the embedder refuses (its message).
    """
    real_in, fake_in = embed_paths(spec, [(real, "REAL"), (fake, "FAKE")], progress, batch_size)
    return real_in, fake_in


def embed_paths(
    spec: str, paths: list[tuple[str, str]], progress: Progress, batch_size: int = 64
) -> list[EmbeddedFile]:
    """Embed each ``(path, flag)`` sample file with the embedder ``spec`` names (built once).

    See :func:`embed_files`; ``flag`` (``"REAL"``, ``"FAKE"``) starts each error message.
    """
    import time

    from lightning_embviz.embedders import embed_in_batches, from_spec

    embedder = from_spec(spec)
    audio = getattr(embedder, "modality", "image") == "audio"
    out = []
    for path, flag in paths:
        images: Optional[ImageFile] = None
        if audio:
            data = _waveforms(path, flag)
            rows = _Rows(lambda index, data=data: data[index], len(data))
        else:
            images = ImageFile(path, None, flag, path)
            rows = _Rows(images.take, int(images.data.shape[0]))
        start = time.perf_counter()
        try:
            features = embed_in_batches(embedder, rows, batch_size)
        except (TypeError, ValueError, RuntimeError) as err:  # e.g. a dtype or shape error
            reason = " ".join(str(err).split())[:300]
            raise ValueError(f"{flag} {path}: the embedder {spec} failed: {reason}") from None
        seconds = time.perf_counter() - start
        progress(f"embedded {len(rows)} samples of {path} with {spec} in {seconds:.1f} s")
        out.append(EmbeddedFile(features.cpu().numpy(), images))
    return out
