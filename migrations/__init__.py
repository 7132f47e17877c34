"""Alembic migrations; ``campaignctl migrate`` runs them."""
