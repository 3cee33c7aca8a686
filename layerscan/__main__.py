"""`python -m layerscan` runs the command line."""

import sys

from layerscan.cli.main import main

sys.exit(main())
