"""Running a study: Ray and the cluster, the searchers and schedulers, the study and final-training lifecycles,
the console, ``--estimate``."""
