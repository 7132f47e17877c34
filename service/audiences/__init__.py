"""Audiences: which of a sponsor's leads a campaign goes to."""
