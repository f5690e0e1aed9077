"""The method itself (Algorithms 1 and 2): what a Dask worker imports; no gin parsing, no files."""
