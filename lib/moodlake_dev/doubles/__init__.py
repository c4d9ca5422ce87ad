"""Test doubles for MoodLake's external services (see :mod:`moodlake_dev.doubles.fake_flickr`)."""
