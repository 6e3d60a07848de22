"""Latency and throughput of zmeet's lanes, each beside a baseline measured in the same run."""
