"""Abuse and input limits: per-sponsor API rate limits, body size and JSON depth."""
