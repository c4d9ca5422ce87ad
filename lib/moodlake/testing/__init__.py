"""Test doubles for MoodLake's external services (see :mod:`moodlake.testing.fake_flickr`)."""
