"""One worker node's load: ``python -m cvmfs_modelio.herd.client MODEL``.

The child imports ONNX Runtime first (what a job does before it touches the model), prints
``ready`` and waits for one line ``go`` on stdin, so that every client of a herd starts the
same load at the same moment; then it creates an ``InferenceSession`` (ORT defaults,
one intra-op thread) and runs one inference on zero inputs.  It prints one JSON line::

    {"go_ns": ..., "session_end_ns": ..., "end_ns": ..., "max_rss_bytes": ...}

(CLOCK_MONOTONIC, shared by all processes of the machine), or ``{"error": "..."}`` and
exit status 1 when the load fails.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m cvmfs_modelio.herd.client MODEL\n")
        return 2
    import onnxruntime as ort

    from cvmfs_modelio.ort.child import zero_inputs

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "go":
        return 2  # the herd was called off before it started
    go = time.monotonic_ns()
    try:
        session = ort.InferenceSession(argv[0], opts, providers=["CPUExecutionProvider"])
        t1 = time.monotonic_ns()
        session.run(None, zero_inputs(session))
        t2 = time.monotonic_ns()
    except Exception as e:  # ORT raises its own types; the message is what matters
        print(json.dumps({"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}))
        return 1
    ru = resource.getrusage(resource.RUSAGE_SELF)
    doc = {
        "go_ns": go,
        "session_end_ns": t1,
        "end_ns": t2,
        "max_rss_bytes": ru.ru_maxrss * 1024,
        "user_ns": round(ru.ru_utime * 1e9),
        "system_ns": round(ru.ru_stime * 1e9),
    }
    print(json.dumps(doc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
