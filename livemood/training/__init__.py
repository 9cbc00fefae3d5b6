"""Training the emotion-conditioned Wav2Lip generator: data scanning, preprocessing and datasets (`data`)."""
