"""Alembic migrations of the user store (run by `services.auth.migrate.upgrade`)."""
