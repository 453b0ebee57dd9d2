"""`python -m advrec`: the `advrec` command (what torchrun's `-m advrec` starts in each worker)."""

from advrec.cli import app

app(prog_name="advrec")
