"""A package, so these modules are imported as e2e.test_… and may share a name with the
in-process test of the module they drive (tests/commander/test_pipelines.py and this
directory's test_pipelines.py, both collected in one run)."""
