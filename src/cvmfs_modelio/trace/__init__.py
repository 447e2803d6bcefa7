"""The LD_PRELOAD tracer: run a program under it, kernel tracepoints, read, summarize, export."""
