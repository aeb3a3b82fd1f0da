"""``python -m cli``: the ``dynlen`` command without installing its console script."""

import sys

from cli.main import main

sys.exit(main())
