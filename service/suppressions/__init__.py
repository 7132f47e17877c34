"""Suppressions: addresses never to write to, per sponsor or for every sponsor."""
