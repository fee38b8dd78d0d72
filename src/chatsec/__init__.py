"""chatsec: a security-hardened schema and policy deployer for a chat PostgreSQL database."""

__version__ = "0.1.0"
