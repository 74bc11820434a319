"""The WSGI entry point gunicorn loads: settings come from the environment."""

from lfs_server.app import create_app

app = create_app()
