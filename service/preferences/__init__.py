"""Recipient preferences: per preference category, whether and how a recipient hears
from a sponsor, and the public preference centre where they choose."""
