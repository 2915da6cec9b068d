"""The ``longplay`` command: run the service or its parts, look after it, use it as a
client. Each module adds its commands to the one Typer app; they are imported in the
order ``longplay --help`` lists them."""

from longplay.cli import serve
from longplay.cli.app import app

# isort: split
from longplay.cli import flower

# isort: split
from longplay.cli import admin

# isort: split
from longplay.cli import jobs

# isort: split
from longplay.cli import kinds

# isort: split
from longplay.cli import flows

# isort: split
from longplay.cli import collections

__all__ = ["admin", "app", "collections", "flower", "flows", "jobs", "kinds", "serve"]
