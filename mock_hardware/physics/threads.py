"""The emulator's numerical work on one BLAS thread.

The emulated board shares its process and cores with the host that drives it (a real board costs
the host no CPU at all). Its products and the wire-network sweep are many small or medium BLAS
calls: a second thread buys little on them and, on a busy 2-core machine, costs more in hand-offs
than it saves (the sweep ran 3x slower and the demo 2x slower with two threads, measured); and
its cores are the host's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache
from typing import Any

from threadpoolctl import ThreadpoolController


@cache
def _controller() -> Any:
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context in which BLAS (numpy's and scipy's) runs on one thread; about 0.1 ms to enter."""
    limiter: AbstractContextManager[Any] = _controller().limit(limits=1, user_api="blas")
    return limiter
