"""``python -m firmware_bridge`` runs ``edge-bridge``."""

import sys

from firmware_bridge.cli import main

sys.exit(main())
