"""``python -m jaxgrad``: the command line (see :mod:`jaxgrad.cli`)."""

from jaxgrad.cli import main

raise SystemExit(main())
