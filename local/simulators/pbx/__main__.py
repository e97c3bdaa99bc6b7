"""``python -m local.simulators.pbx``: the PBX simulator, standalone."""

import sys

from local.simulators.pbx import main

sys.exit(main())
