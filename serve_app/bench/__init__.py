"""`soul bench hot|miss|catalog|render`: one module per scenario, shared pieces in ``common``."""

from serve_app.bench.common import add_arguments, main
from serve_app.bench.render import encode_formats

__all__ = ["add_arguments", "encode_formats", "main"]
