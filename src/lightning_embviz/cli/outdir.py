"""``-o`` checked before any work: the output directory (or reference file) of a command.

A bad ``-o`` costs nothing: it is created and proved writable before any file is read or
any metric computed, and a failed run removes the empty directories it created.
"""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path
from typing import Optional

__all__ = ["prepare_out", "prepare_out_file", "remove_empty"]

_REFERENCE_SUFFIXES = (".npz", ".pt", ".pth")


def prepare_out_file(out: Path) -> list[Path]:
    """Check ``-o FILE`` of ``embviz reference`` before any work; create its directory.

    Returns:
        The directories created, outermost first (see :func:`prepare_out`).

    Raises:
        ValueError: one line naming ``-o``, the problem and what to do.
    """
    if out.is_dir():
        raise ValueError(f"-o {out}: is a directory; give a file name such as {out / 'ref.npz'}.")
    if out.suffix not in _REFERENCE_SUFFIXES:  # as RealReference.save tells them apart
        raise ValueError(
            f"-o {out}: a reference file ends in .npz (NumPy) or .pt/.pth (torch), got "
            f"{out.suffix or '(no extension)'!r}; e.g. -o {out.with_suffix('.npz').name}."
        )
    from lightning_embviz._io import is_reference_file
    from lightning_embviz.engine.memorization_reference import is_train_reference_file

    if out.exists() and not (is_reference_file(out) or is_train_reference_file(out)):
        # Only a saved reference is replaced: never REAL itself or other data by mistake.
        raise ValueError(
            f"-o {out}: exists and is not a saved reference; it is not replaced. Remove it "
            "first or choose another FILE."
        )
    return prepare_out(out.parent, shown=out)


def prepare_out(out: Path, shown: Optional[Path] = None) -> list[Path]:
    """Create the ``-o`` directory (and missing parents) and prove it writable.

    Runs before any file is read or any metric computed, so a bad ``-o`` costs nothing.

    Args:
        out: the directory.
        shown: what ``-o`` was given as, for the messages (default: ``out``); the file
            whose directory ``out`` is, for ``embviz reference``.

    Returns:
        The directories created, outermost first, for :func:`remove_empty` after a failure.

    Raises:
        ValueError: one line naming ``-o``, the problem and what to do.
    """
    flag = f"-o {shown if shown is not None else out}"
    what = "DIR" if shown is None else "FILE"
    missing: list[Path] = []
    existing = out
    mode = 0
    while True:
        try:
            mode = existing.stat().st_mode
            break
        except (FileNotFoundError, NotADirectoryError):  # walk up to what exists
            if existing.parent == existing:  # pragma: no cover - the root always exists
                break
            missing.append(existing)
            existing = existing.parent
        except OSError as err:
            raise ValueError(
                f"{flag}: cannot look at {existing} ({err.strerror or err}); choose another {what}."
            ) from None
    if not stat.S_ISDIR(mode):
        if existing == out and shown is None:
            raise ValueError(
                f"{flag}: is an existing file, not a directory; choose a directory path "
                "(it is created if needed)."
            )
        raise ValueError(
            f"{flag}: cannot create the directory, {existing} is a file; choose another {what}."
        )
    created: list[Path] = []
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():  # appeared meanwhile, as something else
                remove_empty(created)
                raise ValueError(f"{flag}: {directory} is a file; choose another {what}.") from None
            continue
        except OSError as err:
            remove_empty(created)
            raise ValueError(
                f"{flag}: cannot create {directory} ({err.strerror or err}); choose a writable "
                "location."
            ) from None
        created.append(directory)
    try:
        # A real write, not os.access: that also catches read-only file systems and ACLs.
        with tempfile.TemporaryFile(dir=out, prefix=".embviz-write-test-"):
            pass
    except OSError as err:
        remove_empty(created)
        raise ValueError(
            f"{flag}: the directory is not writable ({err.strerror or err}); choose a writable "
            "location."
        ) from None
    return created


def remove_empty(created: list[Path]) -> None:
    """Remove the directories a failed run created, innermost first, if still empty."""
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (or gone): leave it and its parents
