"""Demo pfbench plugin (tests only): an adapter, a sampler and a metric registered through entry points."""
