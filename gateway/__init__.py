"""IOM partner gateway: the Flask application, its API, models, services and CLI."""

from gateway.app import create_app

__all__ = ["create_app"]
