"""Neural networks: the Wav2Lip generator (plain, emotion-conditioned, slim) and its checkpoints."""
