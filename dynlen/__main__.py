"""``python -m dynlen``: the ``dynlen`` command without its console script."""

import sys

from dynlen.cli.main import main

sys.exit(main())
