"""The engine: the phase loop of a class-incremental run (``driver.run_experiment``), the Lightning module, the run
directory (resume, lock), the loaders, the per-run results and metrics, the loggers, and re-evaluation
(``python -m emmcil.engine.evaluate``). It drives the methods of :mod:`emmcil.methods` through their hooks."""
