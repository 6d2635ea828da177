"""Reading finished studies: their result files (``_sources``), the report's figures (``_figures``), the paired
verdict and its statistics, and which settings mattered (fANOVA). ``search.compare`` is its command."""
