"""After (and during) a sweep: the report and its verdict, leaderboard data, figures, the
bootstrap, short names, PBT lineage, ``sweep status``, ``sweep export`` and the dashboard."""
