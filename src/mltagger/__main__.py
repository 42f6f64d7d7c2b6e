"""`python -m mltagger <job> ...`: the same command as `mltagger`, for `accelerate launch -m`."""

import sys

from mltagger.cli import main

sys.exit(main())
