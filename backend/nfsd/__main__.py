"""``python -m nfsd`` is the ``nfsd`` console script."""

import sys

from .cli import main

sys.exit(main())
