"""What the notebooks write and draw, one module per kind of output: ``stage`` (a stage's per-seed
rows, summary and DVC metrics; every run's rows read back), ``tables`` (Table I, the ranking, the
caption ablation, the backbone gains), ``figures``, ``ablation`` (what each ``paper`` switch does)
and ``captions`` (caption quality). Callers name the module: ``report.stage.write_stage``,
``report.figures.plot_shots``."""

from . import ablation, captions, figures, stage, tables  # noqa: F401  (the modules as attributes of the package)
