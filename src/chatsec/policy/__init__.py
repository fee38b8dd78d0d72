"""Declared security state (policies/), the live state read from the catalog, and their difference."""
