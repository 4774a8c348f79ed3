"""A package, so that its test modules may share a basename with one in tests/unit (test_nv_metrics.py):
pytest imports these as e2e.<name>."""
