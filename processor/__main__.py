"""`python -m processor` is the `leernetwerk` command."""

import sys

from processor.commands.cli import main

# Guarded: a helper process (spawn) imports this module again and must not run the command.
if __name__ == "__main__":
    sys.exit(main())
