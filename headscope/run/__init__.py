"""Running analyses: ``analyze`` and its jobs, shards, ranks, checkpoints and interrupts, results, explain and compare."""
