"""Benchmarks of MoodLake, runnable as modules (``python -m moodlake.bench.<name>``)."""
