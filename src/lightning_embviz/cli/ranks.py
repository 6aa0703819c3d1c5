"""The torchrun processes of one ``embviz`` run: rank, world size, one failure agreement."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Optional, TypeVar

__all__ = ["OtherRankFailed", "Ranks", "agreed"]

T = TypeVar("T")


class OtherRankFailed(Exception):
    """Raised on a rank whose inputs were fine when another rank's were not (under torchrun).

    ``message`` is None where the failing rank (or rank 0) already reports the problem.
    """

    def __init__(self, message: Optional[str]) -> None:
        super().__init__(message or "")
        self.message = message


class Ranks:
    """This process's place among the torchrun processes: rank, world size, one agreement.

    ``torchrun --nproc-per-node N -m lightning_embviz report ...`` starts N processes with
    ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. Every
    rank reads the files and runs the input checks, then :meth:`agree` (one all-reduce of a
    failure flag per rank) makes every rank stop with exit status 2 if any rank failed, so no
    rank waits in a collective that another never enters. The metrics share the distance
    work (:mod:`lightning_embviz.distributed`); rank 0 alone does everything else.
    """

    def __init__(self) -> None:
        self.rank, self.world = 0, 1
        self._owned = False
        self._agreed = False

    @classmethod
    def from_environment(cls) -> Ranks:
        """Join the process group torchrun describes (``WORLD_SIZE`` > 1), or stay alone.

        An already initialised default group (``main`` called from a distributed program)
        is used as it is. The group is gloo even where CUDA is available: the command's
        tensors live on the CPU (it reads files into NumPy arrays), and gloo gathers them
        there, without one GPU per process or copies to a device.
        """
        ranks = cls()
        text = os.environ.get("WORLD_SIZE", "1")
        try:
            world = int(text)
        except ValueError:
            raise ValueError(
                f"WORLD_SIZE={text!r} is not an integer; unset it, or start the command "
                "with `torchrun --nproc-per-node N -m lightning_embviz ...`."
            ) from None
        import torch.distributed as dist

        if not dist.is_available() or (world <= 1 and not dist.is_initialized()):
            return ranks
        if not dist.is_initialized():
            dist.init_process_group("gloo")
            ranks._owned = True
        ranks.rank, ranks.world = dist.get_rank(), dist.get_world_size()
        return ranks

    @property
    def lead(self) -> bool:
        """Whether this process writes the files and prints (rank 0)."""
        return self.rank == 0

    def agree(self, error: Optional[BaseException]) -> None:
        """Every rank calls this once, before any metric collective; raise if any rank failed.

        Args:
            error: this rank's input error, or None.

        Raises:
            ``error`` itself; or, where this rank's inputs were fine but another rank's
            were not, :class:`OtherRankFailed`.
        """
        if self.world == 1 or self._agreed:
            if error is not None:
                raise error
            return
        self._agreed = True
        import torch
        import torch.distributed as dist

        device = torch.device("cpu")
        if "nccl" in str(dist.get_backend()).lower():
            device = torch.device("cuda", torch.cuda.current_device())
        flags = torch.zeros(self.world, dtype=torch.int64, device=device)
        flags[self.rank] = int(error is not None)
        dist.all_reduce(flags)
        failed = [r for r, flag in enumerate(flags.tolist()) if flag]
        if not failed:
            return
        if error is not None:
            if self.lead or failed[0] != 0:
                raise error  # reported here: by rank 0, or by a rank when rank 0 was fine
            raise OtherRankFailed(None)
        if self.lead:
            raise OtherRankFailed(
                f"rank {failed[0]} of {self.world} could not read or check its inputs (its "
                "message is above); every process must see the same files."
            )
        raise OtherRankFailed(None)

    def close(self) -> None:
        """Leave the process group this object joined (not one it found initialised)."""
        if self._owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owned = False


def agreed(ranks: Ranks, step: Callable[[], T]) -> T:
    """Run ``step`` (reading and checking inputs), then agree with the other ranks.

    Every rank reads and checks, so input errors are the same on every rank; if any rank
    failed, every rank stops here (:meth:`Ranks.agree`), before any metric collective.

    Returns:
        What ``step`` returned.

    Raises:
        The error of ``step``, or :class:`OtherRankFailed` where another rank failed.
    """
    try:
        result = step()
    except Exception as err:
        ranks.agree(err)
        raise
    ranks.agree(None)
    return result
