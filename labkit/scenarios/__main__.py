"""``python -m labkit.scenarios COMMAND``: the same as ``labkit scenario COMMAND``."""

import sys

from labkit.scenarios.cli import main, parse

sys.exit(main(parse()))
