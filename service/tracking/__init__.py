"""Tracking: signed tokens for the open pixel, click redirects and unsubscribe links."""
