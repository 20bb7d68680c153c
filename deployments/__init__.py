"""One Ray Serve deployment per module, each a thin wrapper around a plain engine class."""
