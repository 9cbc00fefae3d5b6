"""livemood: live emotion filter for video calls."""
