"""The measured storage initializer: KServe's own download step, as its init container runs it.

``python -m cvmfs_modelio.serving.storage_init OUT_DIR URI [URI...]`` calls
``kserve_storage.Storage.download(uri, OUT_DIR)`` for each URI in turn, as KServe's
``storage-initializer`` entrypoint does for ``storageUri`` (one streaming GET per http://
file, no ranges, no parallel parts).  A model with external data is several files: KServe
would need them packed in one archive; here each is one URI, downloaded one after the
other, which moves the same bytes.  It prints one JSON line with the bytes of every file
it wrote and when its imports and the download ended, or one error line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
import time


def download(out_dir: str, uris: list[str]) -> dict[str, object]:
    """Download every URI into ``out_dir``: {file name: bytes} of what is there, and when
    (CLOCK_MONOTONIC ns) the import of ``kserve_storage`` ended and the download did."""
    from kserve_storage import Storage

    imported = time.monotonic_ns()
    for uri in uris:
        Storage.download(uri, out_dir)
    done = time.monotonic_ns()
    files = {e.name: e.stat().st_size for e in os.scandir(out_dir) if e.is_file()}
    return {"files_bytes": files, "imported_ns": imported, "downloaded_ns": done}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: python -m cvmfs_modelio.serving.storage_init OUT_DIR URI...\n")
        return 2
    try:
        doc = download(argv[0], argv[1:])
    except Exception as e:  # one line for the parent, which names the user's file
        text = str(e).strip().splitlines()
        sys.stderr.write(f"{type(e).__name__}: {text[0] if text else ''}\n")
        return 1
    sys.stdout.write(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
