"""What every stage shares: the event table, units, errors, atomic writes and result files."""
