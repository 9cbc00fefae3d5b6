"""The live path: sources, the pipeline, sinks and keys."""
