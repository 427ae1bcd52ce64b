"""sweep: hyperparameter sweeps for the TensorFlow 2 Object Detection API on Ray Tune + Optuna.

How a sweep flows, and where each step lives (each floor imports only the floors below it):

    search/  the space (YAML) -> an Optuna sampler's draw -> a trial's parameters
    odapi/   the parameters -> the trial's rendered pipeline.config -> the OD API train and
             eval jobs (worker) -> event files -> metrics
    run/     the trial runner (jobs, checkpoints, the train gate) -> results -> Ray Tune's
             scheduler and the study; settings and pre-launch validation; the Ray backend
    report/  trial folders -> leaderboard, report, verdict, status, export, dashboard
    data/    annotations -> TFRecords and label maps (``sweep data``), the synthetic demo set
    core/    what every floor shares: errors, inputs, the experiment's on-disk layout, the
             gate and child processes, study URLs
    cli.py   the ``sweep`` command on top
"""

from sweep.core import protos as _protos

_protos.install()  # before anything imports the OD API's protobuf modules (sweep/core/protos.py)
