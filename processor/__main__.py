"""`python -m processor` is the `leernetwerk` command."""

import sys

from processor.cli import main

sys.exit(main())
