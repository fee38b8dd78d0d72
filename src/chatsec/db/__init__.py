"""Connections to PostgreSQL: URL handling, TLS requirements, locks and error translation.

Import the modules themselves (chatsec.db.connect, .url, .lock): this package imports
nothing, so what needs only a URL or a default does not load the driver.
"""
