"""Run (or resume) a class-incremental experiment: ``python run.py with demo`` (see config.py).

The last line printed is the run directory, which holds results.json / results.md and the phase checkpoints.
Sacred's observers record the run: ``python run.py -F sacred_runs with demo`` writes the config, the provenance
(``info``), the metrics of every phase, the run's files (artifacts) and its summary (``result``) to sacred_runs/.
"""
from config import ex
from emmcil.engine.driver import run_and_summarize


@ex.automain
def main(_config, _run):
    run_dir, summary = run_and_summarize(_config, _run)
    print(run_dir)
    return summary
