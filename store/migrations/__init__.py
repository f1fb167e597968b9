"""Alembic migrations for the kcc-mail schema."""
