"""Count torch.compile's recompilations while a block of code runs.

A recompile is Dynamo compiling a frame again because a guard of its earlier graphs failed
(another layer index, another shape, eval mode); past ``recompile_limit`` the frame runs
eagerly for good. Counted from Dynamo's ``recompiles`` log artifact, so the count is Dynamo's
own, whatever the backend."""

from __future__ import annotations

import logging


class RecompileCounter(logging.Handler):
    """``with RecompileCounter() as rc: ...``; then ``rc.count`` and ``rc.reasons``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reasons: list[str] = []
        self.limit_hit = False

    @property
    def count(self) -> int:
        return len(self.reasons)

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "Recompiling function" in msg:
            self.reasons.append(" ".join(msg.split())[:400])
        elif "recompile_limit" in msg or "cache_size_limit" in msg:
            self.limit_hit = True

    def __enter__(self) -> "RecompileCounter":
        import torch._logging

        torch._logging.set_logs(recompiles=True)
        logging.getLogger("torch._dynamo").addHandler(self)  # set_logs gives it a handler of its own and stops propagation there
        return self

    def __exit__(self, *exc) -> None:
        import torch._logging

        logging.getLogger("torch._dynamo").removeHandler(self)
        torch._logging.set_logs()
