"""Run (or resume) a class-incremental experiment: ``python run.py with demo`` (see emmcil/config.py).

The last line printed is the run directory, which holds results.json / results.md and the phase checkpoints.
Sacred's observers record the run: ``python run.py -F sacred_runs with demo`` writes the config, the provenance
(``info``), the metrics of every phase, the run's files (artifacts) and its summary (``result``) to sacred_runs/.

Exit status: 0 finished (or stopped on purpose by ``stop_after_phase``); 1 failed or refused; 75
(``emmcil.stops.STOPPED_EXIT_CODE``) stopped by SIGTERM or SIGINT (``kill PID``, a scheduler, Ctrl-C), in any pass:
re-running the same command resumes after the last saved phase, which the run prints.

A run that cannot start or go on as asked (another process holds its run directory; it would resume a run made with
another config or other data, or from a checkpoint of another run; no checkpoint of it can be read; a data file that
is not what the dataset says; a class of a phase without training or test sample; the disk is full) stops with the
message alone and exit status 1, and so does a phase whose loss or weights turned NaN or infinite (the message names
the phase, the step and the likely cause; the phase is not saved); ``python run.py --debug with ...`` shows the
traceback. Text keys stay text on the command line: ``exp_name=2024_01`` is the name "2024_01", not sacred's int.
"""
import sys
from typing import Sequence

from sacred.utils import SacredError

from emmcil import stops
from emmcil.atomic import disk_full
from emmcil.config import ex, keep_strings


def refusals() -> tuple[type[Exception], ...]:
    """The errors a run stops with, message alone (imported when a run starts: ``print_config`` and config errors
    import no torch)."""
    from emmcil.data.arrow import ArrowFormatError
    from emmcil.data.dataset import CorruptImageError
    from emmcil.data.scenario import IncompleteClassesError
    from emmcil.data.tokenizer import TokenizerNotFoundError
    from emmcil.engine.driver import SettingError
    from emmcil.engine.module import NonFiniteError
    from emmcil.engine.rundir import (ConfigMismatchError, NotARunDirectoryError, RunInUseError,
                                      UnreadableCheckpointError, UnreadableFileError)

    return (RunInUseError, NotARunDirectoryError, ConfigMismatchError, UnreadableCheckpointError, UnreadableFileError,
            ArrowFormatError, TokenizerNotFoundError, IncompleteClassesError, NonFiniteError, SettingError,
            CorruptImageError)


def __getattr__(name: str):
    if name == "REFUSALS":
        return refusals()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RunRefused(SacredError):
    """One of :func:`refusals`, which sacred prints without its traceback (the message names the file or key)."""

    def __init__(self, message: str):
        super().__init__(message, print_traceback=False)


class RunStopped(KeyboardInterrupt):
    """The run was stopped by a signal: sacred records it as INTERRUPTED, and :func:`cli` exits with
    ``stops.STOPPED_EXIT_CODE``."""

    STATUS = "INTERRUPTED"


@ex.main
def main(_config, _run):
    from emmcil.engine.driver import resume_note, run_and_summarize

    with stops.stoppable():
        try:
            run_dir, summary = run_and_summarize(_config, _run)
        except refusals() as err:
            raise RunRefused(f"{type(err).__name__}: {err}") from err
        except BaseException as err:
            full = disk_full(err)
            if full is not None:  # what was kept, then the cause on the last line
                raise RunRefused(f"free some space, then {resume_note(_config).removeprefix('stopped: ')}\n{full}"
                                 ) from err
            stop = stops.stop_of(err)
            if stop is None:
                raise
            print(f"{resume_note(_config)} ({stop})", file=sys.stderr)
            raise RunStopped(str(stop)) from None
    print(run_dir)
    return summary


def cli(argv: Sequence[str] | None = None) -> int:
    """``python run.py ...`` / ``emmcil train ...`` (``argv``: the program's name, then its arguments; default
    ``sys.argv``): sacred's command line; a stopped run exits with ``stops.STOPPED_EXIT_CODE``."""
    try:
        ex.run_commandline(keep_strings(list(sys.argv if argv is None else argv)))  # exp_name=2024_01 stays text
    except RunStopped:
        return stops.STOPPED_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(cli())
