"""Sponsors: tenants and their sending identity."""
