"""Read embedding, label and reference files for the ``embviz`` command.

Embeddings and labels: .npy, .npz, .pt/.pth, .csv. A saved
:class:`~lightning_embviz.RealReference` (``embviz reference``, ``RealReference.save``) is
recognised by its content, not by its name: :func:`is_reference_file`, :func:`load_reference`.

Every problem raises :class:`EmbeddingFileError` with a one-line message naming the file,
what is wrong and what to do, so that the command can print it without a traceback.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

if TYPE_CHECKING:
    from lightning_embviz.reference import RealReference

__all__ = [
    "FORMATS",
    "EmbeddingFileError",
    "is_reference_file",
    "load_embeddings",
    "load_labels",
    "load_reference",
]

FORMATS = (".npy", ".npz", ".pt", ".pth", ".csv")
# Keys tried, in order, when an .npz / .pt file holds several arrays.
_PREFERRED_KEYS = ("embeddings", "features", "x", "arr_0")
_LABEL_KEYS = ("labels", "label", "y", "targets", "arr_0")


class EmbeddingFileError(ValueError):
    """A file that cannot be read as embeddings or labels (message is one line)."""


# The tag that ``RealReference.save`` writes under the key "format" (one definition, there).
def _reference_tag() -> str:
    from lightning_embviz.engine.reference_file import FORMAT_NAME

    return FORMAT_NAME


def _is_reference_tag(value: Any) -> bool:
    """Whether a container's "format" entry is the RealReference tag (a str or 0-d str array)."""
    from lightning_embviz.engine.reference_file import format_tag

    return format_tag(value) == _reference_tag()


def _saved_reference_error(path: Path) -> EmbeddingFileError:
    return EmbeddingFileError(
        f"{path}: is a saved RealReference (embviz reference), not an array of embeddings or "
        "labels; it can only take the place of REAL, the first file."
    )


def is_reference_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file written by :meth:`RealReference.save`, judged by its content.

    The file name does not matter: an npz archive holding an entry ``format`` equal to the
    RealReference tag, or a torch zip file holding a dict with that tag, is a reference. An
    npz or torch file of embeddings (any keys, even ``format`` with another value) is not;
    neither is anything that cannot be opened (the embedding reader then says why). Only the
    small ``format`` entry is read (torch files are memory-mapped).

    Args:
        path: any path.

    Returns:
        True for a saved reference (possibly of another format version, or damaged: then
        :func:`load_reference` says what is wrong).
    """
    from lightning_embviz.engine.reference_file import saved_format_tag

    return saved_format_tag(path) == _reference_tag()
    return False


def load_reference(path: str | os.PathLike[str]) -> RealReference:
    """Load a saved :class:`~lightning_embviz.RealReference`, every failure as one line.

    Args:
        path: a file for which :func:`is_reference_file` is True.

    Returns:
        The reference on the CPU.

    Raises:
        EmbeddingFileError: another format version, a real set that does not match the
            stored fingerprint, missing entries or damaged bytes; the message says to fit
            the reference again.
    """
    from lightning_embviz.reference import RealReference

    p = Path(path)
    try:
        return RealReference.load(p)
    except ValueError as err:  # the reference's own messages: version, fingerprint, entries
        raise EmbeddingFileError(" ".join(str(err).split())) from None
    except Exception as err:  # damaged bytes (zip CRC, truncated member, bad pickle)
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise EmbeddingFileError(
            f"{p}: a saved RealReference that cannot be read ({reason}); fit it again with "
            f"`embviz reference REAL -k ... -o {p}`."
        ) from None


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise EmbeddingFileError(
            f"{path}: unknown format {suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(FORMATS)}."
        )
    return suffix


def _pick(container: dict[str, Any], path: Path, preferred: tuple[str, ...]) -> Any:
    keys = list(container)
    if not keys:
        raise EmbeddingFileError(f"{path}: the file holds no arrays.")
    if len(keys) == 1:
        return container[keys[0]]
    for key in preferred:
        if key in container:
            return container[key]
    raise EmbeddingFileError(
        f"{path}: holds several arrays {keys}; name the one to use "
        f"{' or '.join(repr(k) for k in preferred[:2])}."
    )


# A whole number as pandas writes integer column names and integer indexes ("0", "17").
_WHOLE = re.compile(r"[+-]?\d+")
# Characters that occur in every non-whole number a CSV writer produces (0.5, 1e-05, inf,
# nan) and in no whole number: pandas writes float values as "0.0", never "0".
_NOT_WHOLE = re.compile(r"[.eEiInN]")
# Header names that mark a column as labels or row ids, never as embedding values.
_NOT_FEATURE_NAMES = frozenset(
    {"label", "labels", "class", "target", "targets", "id", "idx", "index"}
)
_UNNAMED = re.compile(r"unnamed: \d+", re.IGNORECASE)  # pandas' name for a read-back index
# Header names tried, in order, for the label column of a several-column labels CSV.
_LABEL_COLUMNS = ("label", "labels", "y", "target", "targets", "class")
_HEADER, _DATA = "header", "data"


def _is_number(text: str) -> bool:
    if not text or "_" in text:  # float() accepts "1_0"; CSV readers do not
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split(line: str, delimiter: str) -> list[str]:
    """One CSV line's fields, unquoted and stripped."""
    return [field.strip() for field in next(csv.reader([line], delimiter=delimiter))]


def _content_lines(handle: TextIO) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of every line that is not blank and not a '#' comment."""
    for number, line in enumerate(handle, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield number, line.rstrip("\r\n")


def _line_kind(fields: list[str], not_whole_below: Callable[[], bool]) -> str:
    """Decide whether the first line of a CSV is a header; see :func:`load_embeddings`.

    Returns ``"header"`` or ``"data"``, or a sentence (starting with "line") saying why the
    line cannot be classified, for the caller to complete with what to do.
    """
    numbers = [_is_number(f) for f in fields]
    whole = [bool(_WHOLE.fullmatch(f)) for f in fields]
    shown = ",".join(fields) if len(fields) <= 8 else ",".join(fields[:6]) + ",..."
    if all(numbers):
        if not all(whole):
            return _DATA
        default = fields == [str(i) for i in range(len(fields))]
        distinct = len({int(f) for f in fields}) == len(fields)
        if not default and (not distinct or any(f.startswith("-") for f in fields)):
            return _DATA  # repeated or negative values: never column names
        if not not_whole_below():
            if default:
                return (
                    f"line 1 '{shown}' is either pandas' default header (column names 0..D-1) "
                    "or a data row: every value in the file is a whole number, so it cannot tell"
                )
            return _DATA  # a file of whole numbers
        if default:
            return _HEADER
        return (
            f"line 1 '{shown}' holds distinct whole numbers above rows written with decimals: "
            "column numbers (e.g. from df[[3, 7]]) or a data row, it cannot tell"
        )
    if any(n and not w for n, w in zip(numbers, whole)):
        return _DATA  # a decimal number next to text: a data row with a text column
    lead = next((i for i, f in enumerate(fields) if f), len(fields))
    has_name = any(f and not n for f, n in zip(fields, numbers))
    if has_name:
        return _HEADER
    if lead > 0 and all(fields[lead:]):
        return _HEADER  # ",0,1,...": pandas' unnamed index column, then the column names
    return _DATA  # whole numbers with a missing value


def _not_whole_below(second: tuple[int, str] | None, handle: TextIO) -> Callable[[], bool]:
    """A lazy check: does any value after line 1 contain a decimal point, exponent, inf or nan?

    Reads the rest of the file in chunks and stops at the first such value (at once for a
    file of floats), so only a file of whole numbers is read to the end.
    """

    def check() -> bool:
        if second is None:
            return False
        if _NOT_WHOLE.search(second[1]):
            return True
        while chunk := handle.read(1 << 20):
            if _NOT_WHOLE.search(chunk):
                return True
        return False

    return check


def _values(count: int) -> str:
    return f"{count} value" if count == 1 else f"{count} values"


def _column(j: int, names: list[str] | None) -> str:
    if names and names[j]:
        return f"column {j + 1} {names[j]!r}"
    return f"column {j + 1}"


def _check_feature_names(path: Path, names: list[str], index: int) -> None:
    """Refuse header names that mark labels, row ids or an index kept as a column."""
    features = names[index:]
    for j, name in enumerate(features, start=index):
        if _UNNAMED.fullmatch(name):
            raise EmbeddingFileError(
                f"{path}: column {j + 1} {name!r} is the row index of an earlier CSV read back by "
                f"pandas; drop it (pd.read_csv(src, index_col=0), or df.drop(columns=[{name!r}]))."
            )
        if name.lower() in _NOT_FEATURE_NAMES:
            raise EmbeddingFileError(
                f"{path}: column {j + 1} {name!r} holds labels or row ids, not embedding values; "
                f"drop it (pandas: df.drop(columns=[{name!r}]).to_csv(path, index=False)); "
                "class labels go in their own file (--labels)."
            )
    # pandas numbers unnamed columns 0..m-1; a tail numbered like that after some named
    # columns means those columns are not features (a named index, labels).
    zero = max((j for j, name in enumerate(features) if name == "0"), default=-1)
    numbered = 0
    if zero >= 0 and features[zero:] == [str(i) for i in range(len(features) - zero)]:
        numbered = len(features) - zero
    if 0 < numbered < len(features):
        extra = features[: len(features) - numbered]
        raise EmbeddingFileError(
            f"{path}: columns {extra} come before the numbered columns 0..{numbered - 1}, like a "
            "named index or a label column; drop them (pandas: "
            f"df.drop(columns={extra}).to_csv(path, index=False), or df.reset_index(drop=True))."
        )


def _explain_csv_error(
    path: Path, delimiter: str, start: int, width: int, index: int, names: list[str] | None
) -> str | None:
    """Find the first line or value that makes the data unreadable and describe it."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        for number, line in _content_lines(handle):
            if number < start:
                continue
            fields = _split(line, delimiter)
            if len(fields) != width:
                return (
                    f"{path}: line {number} has {_values(len(fields))}, line {start} has "
                    f"{width}; every row needs the same columns."
                )
            for j in range(index, width):
                value = fields[j]
                if not value:
                    return (
                        f"{path}: {_column(j, names)} is empty on line {number} (a missing value); "
                        "fill or drop that row."
                    )
                if not _is_number(value):
                    return (
                        f"{path}: {_column(j, names)} is not numeric (line {number}: {value!r}); "
                        "the CSV must hold embedding values only: drop that column "
                        "(class labels go in their own file, --labels)."
                    )
    return None


def _read_csv(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        lines = _content_lines(handle)
        first = next(lines, None)
        if first is None:
            raise EmbeddingFileError(f"{path}: the CSV file is empty.")
        delimiter = "\t" if "\t" in first[1] and "," not in first[1] else ","
        fields = _split(first[1], delimiter)
        second = next(lines, None)
        kind = _line_kind(fields, _not_whole_below(second, handle))
    if kind not in (_HEADER, _DATA):
        raise EmbeddingFileError(
            f"{path}: {kind}. Write a header line of names (pandas: "
            "df.add_prefix('f').to_csv(path, index=False)) or save the array as .npy."
        )
    width = len(fields)
    names: list[str] | None = None
    index = 0
    start = first[0]
    if kind == _HEADER:
        names = fields
        index = next((i for i, f in enumerate(fields) if f), len(fields))
        if index == len(fields):
            raise EmbeddingFileError(f"{path}: the header line names no columns.")
        _check_feature_names(path, names, index)
        if second is None:
            raise EmbeddingFileError(f"{path}: holds a header line but no data rows.")
        start = second[0]
        found = len(_split(second[1], delimiter))
        if found != width:
            hint = (
                " (an index column whose header name is missing? write the file with "
                "df.to_csv(path, index=False))"
                if found == width + 1
                else ""
            )
            raise EmbeddingFileError(
                f"{path}: the header (line {first[0]}) has {width} names but line {second[0]} "
                f"has {found} values{hint}."
            )
    # The pandas index columns are skipped without parsing, so text ids do not matter.
    converters: dict[int | str, Callable[[str], Any]] = {j: _zero for j in range(index)}
    try:
        data = np.loadtxt(
            path,
            delimiter=delimiter,
            skiprows=first[0] if kind == _HEADER else 0,
            ndmin=2,
            dtype=np.float64,
            encoding="utf-8-sig",
            quotechar='"',
            converters=converters or None,
        )
    except ValueError as err:
        message = _explain_csv_error(path, delimiter, start, width, index, names)
        if message is None:
            reason = str(err).splitlines()[0] if str(err) else "not numeric"
            message = f"{path}: cannot parse as numbers ({reason})."
        raise EmbeddingFileError(message) from None
    return _text_precision(data[:, index:])


# A value written with at most 9 significant digits times 10^(8 - exponent) is a whole number
# up to the rounding of the scaling (about 2e-7 at 1e9); a float64 written in full is not,
# except by chance (1e-5 per value).
_NINE_DIGITS_TOL = 1e-5


def _text_precision(values: np.ndarray) -> np.ndarray:
    """Parsed CSV values as float32 when the text holds float32 data, else as float64.

    Text cannot say which float type it was written from. float32 data is written either
    exactly (``np.savetxt``'s ``%.18e``) or with at most 9 significant digits (pandas, NumPy's
    shortest repr, ``%.9g``); parsed as float64 the latter differs from the float32 values in
    the 9th digit, and so would every result computed from it. Read as float32, the CSV
    gives the same array, and the same metrics.json, as the ``.npy`` it was written from.
    Values with more digits (float64 data) stay float64.
    """
    single = values.astype(np.float32)
    if np.array_equal(single.astype(np.float64), values, equal_nan=True):
        return single
    finite = values[np.isfinite(values) & (values != 0)]
    whole = finite[finite == np.round(finite)]
    if whole.size and float(np.abs(whole).max()) > 2.0**24:  # integers float32 cannot hold
        return values
    exponent = np.floor(np.log10(np.abs(finite)))
    scaled = finite * 10.0 ** (8.0 - exponent)
    if np.all(np.abs(scaled - np.round(scaled)) < _NINE_DIGITS_TOL):
        return single
    return values


def _zero(_: str) -> float:
    return 0.0


def _read_label_csv(path: Path, expected_rows: int | None) -> np.ndarray:
    """One label per data row of a CSV; see :func:`load_labels` for the header rules."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        raw = list(_content_lines(handle))
    if not raw:
        raise EmbeddingFileError(f"{path}: the CSV file is empty.")
    delimiter = "\t" if "\t" in raw[0][1] and "," not in raw[0][1] else ","
    rows = [(number, _split(line, delimiter)) for number, line in raw]
    fields = rows[0][1]
    rest = "\n".join(line for _, line in raw[1:])
    kind = _line_kind(fields, lambda: _NOT_WHOLE.search(rest) is not None)
    if kind == _HEADER and len(fields) == 1 and not _is_number(fields[0]):
        kind = "a single name"  # a header or the first of headerless text labels
    if kind not in (_HEADER, _DATA):
        if expected_rows is not None and len(rows) in (expected_rows, expected_rows + 1):
            kind = _HEADER if len(rows) == expected_rows + 1 else _DATA
        elif kind == "a single name":
            kind = _HEADER
        else:
            raise EmbeddingFileError(
                f"{path}: {kind}. Write a header line naming the column (e.g. label)."
            )
    names = fields if kind == _HEADER else None
    index = next((i for i, f in enumerate(fields) if f), 0) if names else 0
    body = rows[1:] if names else rows
    width = len(fields)
    for number, row in body:
        if len(row) != width:
            raise EmbeddingFileError(
                f"{path}: line {number} has {_values(len(row))}, line {rows[0][0]} has "
                f"{width}; every row needs the same columns."
            )
    columns = list(range(index, width))
    if len(columns) > 1:
        lowered = [n.lower() for n in names] if names else []
        chosen = next(
            (lowered.index(c, index) for c in _LABEL_COLUMNS if c in lowered[index:]), None
        )
        if chosen is None:
            raise EmbeddingFileError(
                f"{path}: holds {len(columns)} columns; keep only the labels, or name their "
                "column 'label' in a header line."
            )
        columns = [chosen]
    values = [row[columns[0]] for _, row in body]
    arr: np.ndarray = np.asarray(values)
    try:
        as_float = arr.astype(np.float64)
        arr = as_float.astype(np.int64) if np.all(as_float == np.round(as_float)) else as_float
    except ValueError:
        pass  # text labels
    return arr


def _read_raw(path: Path, preferred: tuple[str, ...]) -> Any:
    if not path.exists():
        raise EmbeddingFileError(f"{path}: no such file.")
    if path.is_dir():
        raise EmbeddingFileError(f"{path}: is a directory, expected a file.")
    suffix = _suffix(path)
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                if "format" in npz.files and _is_reference_tag(npz["format"]):
                    raise _saved_reference_error(path)
                return _pick({k: npz[k] for k in npz.files}, path, preferred)
        if suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if _is_reference_tag(obj.get("format")):
                    raise _saved_reference_error(path)
                obj = _pick(obj, path, preferred)
            if isinstance(obj, (list, tuple)) and obj and all(hasattr(t, "shape") for t in obj):
                obj = torch.cat([torch.as_tensor(t) for t in obj])
            if isinstance(obj, torch.Tensor):
                return obj.detach().cpu().numpy()
            raise EmbeddingFileError(
                f"{path}: holds a {type(obj).__name__}, expected a tensor or a dict of tensors."
            )
        return _read_csv(path)
    except EmbeddingFileError:
        raise
    except Exception as err:  # any reader failure becomes a one-line message
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise EmbeddingFileError(f"{path}: cannot read as {suffix} ({reason}).") from None


def load_embeddings(
    path: str | os.PathLike[str],
    expected_width: int | None = None,
    width_source: str = "the real set",
) -> np.ndarray:
    """Read an (N, D) embedding array from a file.

    Supported: ``.npy``; ``.npz`` with one array (or one named ``embeddings``/``features``);
    ``.pt``/``.pth`` holding a tensor, a list of tensors (concatenated) or a dict of tensors
    (loaded with ``weights_only=True``); ``.csv`` with one row per sample.

    CSV rules (comma-separated, or tab-separated when the first line has tabs and no commas;
    blank lines and lines starting with ``#`` are skipped; quoted fields are unquoted):

    * The first line is a header when it holds names (``f0,f1,...``, ``x,y``), or starts with
      an empty field (``,0,1,...``: ``df.to_csv(path)`` with pandas' index), or is exactly
      ``0,1,...,D-1`` written as whole numbers (``df.to_csv(path, index=False)``) while some
      value below it is written with a decimal point, an exponent, ``inf`` or ``nan``. pandas
      writes float values as ``0.0``, never ``0``, so its default header is told apart from a
      data row by the way the numbers are written.
    * Any other first line of numbers is data. Refused as ambiguous, with a message saying
      what to do: a first line ``0,1,...,D-1`` in a file of whole numbers only (an integer
      DataFrame's header, or a data row?), and a first line of other distinct non-negative
      whole numbers above rows with decimals (column numbers such as ``df[[3, 7]]``, or data?).
    * Header fields that are empty at the start of the line name pandas' index columns: those
      columns are dropped whatever they hold. Refused: named columns before a tail numbered
      ``0,1,...`` (a named index or labels), columns named ``label``, ``labels``, ``class``,
      ``target(s)``, ``id``, ``idx``, ``index`` (any case) or ``Unnamed: N``, a header whose
      count differs from the first data row's, and any empty or non-numeric value (the error
      names the column and the line).

    Args:
        path: the file.
        expected_width: the width D the embeddings must have (that of the real set), or None.
        width_source: what ``expected_width`` comes from, for the error message.

    Returns:
        (N, D) float array (float32 kept, other types become float64). CSV gives float32
        when every value is a float32 or is written with at most 9 significant digits (as
        pandas, NumPy and ``%.9g`` write float32 data), so that a CSV and the ``.npy`` of
        the same float32 data give identical results; float64 otherwise.

    Raises:
        EmbeddingFileError: missing file, unknown format, unreadable content, non-numeric
            values, a CSV refused by the rules above, a shape other than (N, D) with N >= 2
            and D >= 1, a width other than ``expected_width``, or NaN/Inf rows.
    """
    p = Path(path)
    arr = np.asarray(_read_raw(p, _PREFERRED_KEYS))
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise EmbeddingFileError(f"{p}: holds values of type {arr.dtype}, expected numbers.")
    if np.iscomplexobj(arr):
        raise EmbeddingFileError(f"{p}: holds complex numbers, expected real numbers.")
    if arr.ndim == 1:
        raise EmbeddingFileError(
            f"{p}: is 1-D with shape {arr.shape}; embeddings need shape (N, D), one row per "
            "sample (for N scalars, save x.reshape(-1, 1))."
        )
    if arr.ndim != 2:
        raise EmbeddingFileError(
            f"{p}: has shape {arr.shape}; embeddings need shape (N, D). "
            "Flatten per-sample features first, e.g. x.reshape(len(x), -1)."
        )
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise EmbeddingFileError(f"{p}: has shape {arr.shape}; need at least 2 rows and 1 column.")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise EmbeddingFileError(
            f"{p}: {len(bad)} of {arr.shape[0]} rows hold NaN or Inf (first: row {bad[0]}); "
            "drop them first."
        )
    if expected_width is not None and arr.shape[1] != expected_width:
        raise EmbeddingFileError(
            f"{p}: has width D={arr.shape[1]} but {width_source} has D={expected_width}; both "
            "sets must come from the same embedding."
        )
    return arr


def load_labels(path: str | os.PathLike[str], expected_rows: int | None = None) -> np.ndarray:
    """Read one class label per sample (ints or strings) from a file.

    Same formats as :func:`load_embeddings`; an (N, 1) array is squeezed to (N,). In an
    ``.npz``/``.pt`` dict the key ``labels`` (or ``y``/``targets``) is used.

    A CSV holds one label per line, or several columns of which the one named ``label``
    (``labels``, ``y``, ``target(s)``, ``class``) in a header line is used. The header rules
    are those of :func:`load_embeddings` (pandas' index columns are dropped), except that a
    first line the rules cannot classify, or a single name (a header, or the first of
    headerless text labels), is a header when the file holds ``expected_rows + 1`` lines and
    data when it holds ``expected_rows``.

    Args:
        path: the file.
        expected_rows: the number of samples the labels must match.

    Returns:
        (N,) array: int64 when every label is a whole number, float64 for other numbers,
        strings otherwise.

    Raises:
        EmbeddingFileError: unreadable file, wrong shape, an ambiguous or several-column CSV,
            or a row count other than ``expected_rows``.
    """
    p = Path(path)
    if p.suffix.lower() == ".csv" and p.is_file():
        try:
            arr = _read_label_csv(p, expected_rows)
        except EmbeddingFileError:
            raise
        except Exception as err:  # any reader failure becomes a one-line message
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise EmbeddingFileError(f"{p}: cannot read as .csv ({reason}).") from None
    else:
        arr = np.asarray(_read_raw(p, _LABEL_KEYS))
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise EmbeddingFileError(
            f"{p}: labels need shape (N,), one per sample, got shape {arr.shape}."
        )
    if expected_rows is not None and arr.shape[0] != expected_rows:
        raise EmbeddingFileError(
            f"{p}: has {arr.shape[0]} labels but the embeddings have {expected_rows} rows."
        )
    return arr
