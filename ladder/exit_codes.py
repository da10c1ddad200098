"""Exit codes of every `ladder` command, defined once. Schedulers and the sweep backends act on
them: requeue on EXIT_PREEMPTED, never retry EXIT_BAD_INPUT or EXIT_DIVERGED."""

EXIT_OK = 0
EXIT_ERROR = 1  # unexpected failure, or results written with warnings (e.g. a fit did not converge)
EXIT_BAD_INPUT = 2  # bad recipe, arguments or data: retrying cannot help
EXIT_DIVERGED = 3  # training loss became NaN/inf; the last good checkpoint is kept
EXIT_PREEMPTED = 75  # SIGTERM/SIGUSR1: checkpoint saved, rerun the same command (EX_TEMPFAIL)
