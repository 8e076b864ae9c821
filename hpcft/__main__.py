"""`python -m hpcft ...`"""

import sys

from hpcft.cli import main

sys.exit(main())
