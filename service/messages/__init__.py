"""Transactional messages: one-to-one emails (attachments so far)."""
