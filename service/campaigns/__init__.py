"""Campaigns: content, audience, lifecycle, deliveries and counters."""
