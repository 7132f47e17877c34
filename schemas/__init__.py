"""Contracts shared with other teams: HTTP bodies and Kafka events."""
