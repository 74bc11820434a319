"""Self-service web pages under /.lfs/ui/: sign in, access tokens, repositories and locks.

Server-rendered (Jinja), no script, one stylesheet of our own. Every page
and form action is checked on the server with the API's rules.
"""

from lfs_server.web import account, admin, repos
from lfs_server.web.blueprint import PREFIX, init_app

__all__ = ["PREFIX", "account", "admin", "init_app", "repos"]
