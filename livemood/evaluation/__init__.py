"""Offline judgement of results: expression, lip sync and background of a video pair, and checkpoints."""
