"""campaign-service: the HTTP API, domain logic and persistence."""
