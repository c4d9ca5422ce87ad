"""Where posts come from: the Flickr API, research sets on disk, synthetic posts."""
