"""`python -m advrec.cli`."""

from advrec.cli import app

app()
