"""Independent per-task work over forked processes: fitting 8 tasks' bootstraps is CPU-bound
and embarrassingly parallel, and fork shares the fitted inputs without pickling them."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def default_workers() -> int:
    """Processes for independent per-task work: LADDER_WORKERS, else min(2, CPUs)."""
    env = os.environ.get("LADDER_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(2, os.cpu_count() or 1))


def parallel_map(fn, items: list, workers: int | None = None) -> list:
    """``[fn(x) for x in items]``, split over forked processes (fork: the inputs are shared,
    not pickled; results come back pickled). Serial where fork is unavailable, for one
    worker or one item, or if a worker fails (then the error surfaces from the serial run)."""
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(items) <= 1 or "fork" not in mp.get_all_start_methods():
        return [fn(x) for x in items]
    chunks = [list(range(i, len(items), workers)) for i in range(workers)]
    ctx = mp.get_context("fork")
    results: dict[int, object] = {}
    procs = []
    try:
        for idx in chunks[1:]:
            recv, send = ctx.Pipe(duplex=False)
            # the child closes every read end it inherits (its own and its siblings'): a child
            # that kept one could block forever writing to a pipe nobody reads
            pr = ctx.Process(target=_child, args=(fn, [items[i] for i in idx], send, os.getpid(),
                                                  [p[2] for p in procs] + [recv]), daemon=True)
            pr.start()
            send.close()
            procs.append((idx, pr, recv))
        for i in chunks[0]:
            results[i] = fn(items[i])
        for idx, pr, recv in procs:
            try:
                ok, payload = recv.recv()
            except EOFError:
                ok, payload = False, None
            pr.join()
            if ok:
                results.update(zip(idx, payload))
            else:  # rerun here so that the real error (or a clean result) surfaces
                results.update((i, fn(items[i])) for i in idx)
    finally:  # an error or Ctrl-C here: no worker outlives the call
        for _, pr, recv in procs:
            recv.close()
            if pr.is_alive():
                pr.kill()
                pr.join()
    return [results[i] for i in range(len(items))]


def set_parent_death_signal(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (PR_SET_PDEATHSIG), so
    workers never outlive the command that started them. If ``parent`` (the expected parent
    pid) is already gone, the signal is sent now. False where unsupported (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        ok = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return ok


def _child(fn, items, conn, parent: int, read_ends) -> None:
    for r in read_ends:
        r.close()
    set_parent_death_signal(signal.SIGKILL, parent)
    try:
        conn.send((True, [fn(x) for x in items]))
    except BaseException:  # the parent reruns these items serially and reports the error
        try:
            conn.send((False, None))
        except Exception:
            pass
    finally:
        conn.close()
