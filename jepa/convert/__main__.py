"""`python -m jepa.convert ...`: the same as `jepa convert ...`."""
import sys

from jepa.convert.cli import main

sys.exit(main())
