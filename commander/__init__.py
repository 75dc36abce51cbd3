"""The Commander: the mesh's single source of truth (Flask + gunicorn + peewee)."""

from commander.app import create_app

__all__ = ["create_app"]
