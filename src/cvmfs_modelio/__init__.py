"""cvmfs-modelio: how machine-learning model files are read from CernVM-FS, measured.

The package mirrors the data flow (docs/layout in ``../shared/DESIGN.md``): ``core`` (events,
units, errors, results), ``probe``, ``trace``, ``chunks``, ``models``, ``sim``, ``mounts``,
``ort``, ``campaign``; ``cli`` is the command line on top of them.
"""

from __future__ import annotations

__version__ = "0.1.0"
