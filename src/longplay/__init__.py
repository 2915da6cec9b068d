"""longplay: long AI media work as background jobs you can follow to the end."""

__version__ = "0.1.0"
