"""Reading a study: the spec's schema and checks, its search space, its compute budget and plan, the YAML files.

Below ``run`` and ``store``: nothing here starts Ray, tracks, or writes a study's results.
"""
