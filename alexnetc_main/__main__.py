"""`python -m alexnetc ...` is the `alexnetc` command; torchrun needs it: `torchrun ... -m alexnetc train`."""
import sys

from alexnetc.runtime.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
