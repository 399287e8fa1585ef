"""``python -m mesh``: run the CA or a ztunnel without the full ambient CLI."""

import sys

from mesh.cli import main

sys.exit(main())
