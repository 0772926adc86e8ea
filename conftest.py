"""Root conftest: the leak check covers every test and every notebook run by nbval; one real
systemd user manager serves the run where the machine allows it (``tests/usermanager.py``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tests"))

pytest_plugins = ["leakcheck", "usermanager"]
