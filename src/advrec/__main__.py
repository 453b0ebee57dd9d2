"""`python -m advrec`: the `advrec` command (what torchrun's `-m advrec` starts in each worker)."""

import sys

from advrec import distributed
from advrec.cli import app

if distributed.launched():  # a torchrun worker: leaves through `exit_worker` once its work is done
    try:
        app(prog_name="advrec")
        code: object = 0
    except SystemExit as done:
        code = done.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
    distributed.exit_worker(code if isinstance(code, int) else int(code is not None))
else:
    app(prog_name="advrec")
