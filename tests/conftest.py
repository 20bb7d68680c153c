"""Before any test module imports Ray: the local nodes the integration tests start listen on
loopback only, with the proxy's middlewares, exactly as under `soul serve`."""

from __future__ import annotations

import os

from serve_app.local import node_env
from serve_app.settings import Settings

os.environ.update(node_env(Settings()))
