"""`python -m sec2sec ...`, and so `torchrun --nproc_per_node N -m sec2sec extract|train|evaluate|compare ...`."""

import sys

from sec2sec.commands import main

if __name__ == "__main__":
    sys.exit(main())
