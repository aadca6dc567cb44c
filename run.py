"""Run (or resume) a class-incremental experiment: ``python run.py with demo`` (see config.py).

The last line printed is the run directory, which holds results.json / results.md and the phase checkpoints.
Sacred's observers record the run: ``python run.py -F sacred_runs with demo`` writes the config, the provenance
(``info``), the metrics of every phase, the run's files (artifacts) and its summary (``result``) to sacred_runs/.

A run that cannot start as asked (another process holds its run directory; it would resume a run made with another
config or other data; a data file that is not what the dataset says; a class of a phase without training or test
sample) stops with the message alone and exit status 1, and so does a phase whose loss or weights turned NaN or
infinite (the message names the phase, the step and the likely cause; the phase is not saved);
``python run.py --debug with ...`` shows the traceback. A run stopped by Ctrl-C says how to resume it.
"""
import sys
import warnings

# sacred 0.8 imports pkg_resources, which setuptools deprecates: a warning about sacred that no run can act on
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from sacred.utils import SacredError  # noqa: E402

from config import ex, keep_strings  # noqa: E402
from emmcil.data.arrow import ArrowFormatError  # noqa: E402
from emmcil.data.dataset import CorruptImageError  # noqa: E402
from emmcil.data.scenario import IncompleteClassesError  # noqa: E402
from emmcil.data.tokenizer import TokenizerNotFoundError  # noqa: E402
from emmcil.engine.driver import SettingError, resume_note, run_and_summarize  # noqa: E402
from emmcil.engine.module import NonFiniteError  # noqa: E402
from emmcil.engine.rundir import ConfigMismatchError, RunInUseError  # noqa: E402

REFUSALS = (RunInUseError, ConfigMismatchError, ArrowFormatError, TokenizerNotFoundError, IncompleteClassesError,
            NonFiniteError, SettingError, CorruptImageError)


class RunRefused(SacredError):
    """One of :data:`REFUSALS`, which sacred prints without its traceback (the message names the file or key)."""

    def __init__(self, message: str):
        super().__init__(message, print_traceback=False)


if __name__ == "__main__":  # text keys stay text: exp_name=2024_01 is the name "2024_01", not sacred's int 202401
    sys.argv = keep_strings(sys.argv)


@ex.automain
def main(_config, _run):
    try:
        run_dir, summary = run_and_summarize(_config, _run)
    except REFUSALS as err:
        raise RunRefused(f"{type(err).__name__}: {err}") from err
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C (inside a phase, Lightning turns it into exit status 1)
        print(resume_note(_config), file=sys.stderr)
        raise
    print(run_dir)
    return summary
