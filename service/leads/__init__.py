"""Leads: the people sponsors write to."""
