"""``python -m cvmfs_modelio.cli``: the ``cvmfs-modelio`` command."""

import sys

from cvmfs_modelio.cli import main

sys.exit(main())
