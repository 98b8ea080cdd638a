"""The fleet: an aggregator of many nodes' events (``serve --aggregate``)."""
