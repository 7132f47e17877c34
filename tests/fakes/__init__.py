"""Fakes for the outside world (the email provider), built from tests/specs."""
