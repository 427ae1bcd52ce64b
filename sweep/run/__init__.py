"""Running a sweep: its settings, pre-launch validation, the trial runner (the OD API jobs,
checkpoints, results), what a trial's best is, TensorBoard HParams, schedulers, and the Ray
Tune backend (the only modules that import Ray)."""
