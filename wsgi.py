"""WSGI entry point: `gunicorn wsgi:app`."""

import sys

from gateway import create_app
from gateway.keys import KeyStoreError

try:
    app = create_app()
except KeyStoreError as error:
    sys.exit(f"iom-gateway: cannot start: {error}")
