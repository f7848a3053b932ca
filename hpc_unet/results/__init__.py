"""The results contract: shards written by tasks, merged by the collector."""
