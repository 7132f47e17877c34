"""Kafka consumer roles: planner, sender, relay."""
