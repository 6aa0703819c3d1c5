"""``main``: parse, join the torchrun processes, check ``-o``, run a command, map its errors.

Exit status: 0 on success; 2 on bad input or usage (one line on stderr), also on every
rank when any rank's inputs were bad; 1 on an unexpected error; 130 when interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from lightning_embviz.cli.console import EXIT_USAGE, PROG, Progress, one_line, write
from lightning_embviz.cli.options import (
    CompareOptions,
    Options,
    ReferenceOptions,
    ReportOptions,
    options_of,
)
from lightning_embviz.cli.outdir import prepare_out, prepare_out_file, remove_empty
from lightning_embviz.cli.parser import build_parser
from lightning_embviz.cli.ranks import OtherRankFailed, Ranks

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``embviz`` command.

    Args:
        argv: the arguments without the program name; None reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 2 on bad input or usage (with a one-line message on
        stderr), 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write(
            f"{PROG}: error: choose a command: report, compare or reference (see --help)\n"
        )
        return EXIT_USAGE
    options = options_of(args)
    ranks = Ranks()
    try:
        ranks = Ranks.from_environment()
        return _run(options, ranks)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except OtherRankFailed as err:
        if err.message:
            sys.stderr.write(f"{PROG}: error: {err.message}\n")
        return EXIT_USAGE
    except (ValueError, TypeError, ModuleNotFoundError, OSError) as err:
        sys.stderr.write(f"{PROG}: error: {one_line(err)}\n")
        return EXIT_USAGE
    except Exception as err:
        if os.environ.get("EMBVIZ_DEBUG"):
            raise
        from lightning_embviz.engine.distributed import RankFailedError

        if isinstance(err, RankFailedError):  # under torchrun: the same line on every rank
            sys.stderr.write(f"{PROG}: error: {one_line(err)}\n")
            return 1
        sys.stderr.write(
            f"{PROG}: unexpected error: {type(err).__name__}: {one_line(err)} "
            "(set EMBVIZ_DEBUG=1 for the traceback)\n"
        )
        return 1
    finally:
        ranks.close()


def _run(options: Options, ranks: Ranks) -> int:
    """Prepare ``-o`` (rank 0), run the command; a failed run leaves no empty directory."""
    # Under torchrun only rank 0 reports progress, prepares -o and writes.
    progress = Progress(options.quiet or not ranks.lead)
    created = _prepare(options, ranks) if ranks.lead else []
    try:
        if isinstance(options, ReportOptions):
            from lightning_embviz.cli.report import run_report

            status = run_report(options, progress, ranks)
        elif isinstance(options, CompareOptions):
            from lightning_embviz.cli.compare import run_compare

            status = run_compare(options, progress, ranks)
        else:
            from lightning_embviz.cli.reference import run_reference

            status = run_reference(options, progress, ranks)
        write(sys.stdout, "", flush=True)  # a closed stdout shows here at the latest
        return status
    except BaseException:
        remove_empty(created)  # a failed run leaves no empty output directory behind
        raise


def _prepare(options: Options, ranks: Ranks) -> list[Path]:
    """Create and check ``-o`` before any work; the other ranks learn of a failure at once."""
    try:
        if isinstance(options, ReferenceOptions):
            return prepare_out_file(options.out)
        return prepare_out(options.out)
    except Exception as err:
        ranks.agree(err)  # the other ranks learn of it before any metric collective
        raise
