"""asv benchmark suites: see docs/TRACKING.md."""
