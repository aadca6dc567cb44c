"""Run (or resume) a class-incremental experiment: ``python run.py with demo`` (see config.py).

The last line printed is the run directory, which holds results.json / results.md and the phase checkpoints.
"""
from config import ex
from emmcil.incremental.driver import run_experiment


@ex.automain
def main(_config):
    run_dir = run_experiment(_config)
    print(run_dir)
