"""Retention: partitions of deliveries and raw events, created ahead and dropped when old."""
