"""Benchmarks of MoodLake, runnable as modules (``python -m moodlake_dev.bench.<name>``)."""
