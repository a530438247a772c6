"""`python -m ansible_mitogen`: see ansible_mitogen.cli."""

import sys

from ansible_mitogen.cli import main

sys.exit(main())
