"""`python -m layerscan` runs the command line."""

import sys

from layerscan.cli import main

sys.exit(main())
