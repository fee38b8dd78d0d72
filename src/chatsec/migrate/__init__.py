"""Alembic wiring: where the revisions live and how chatsec runs them."""
