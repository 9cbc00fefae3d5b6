"""Speech: Wav2Lip mel spectrograms, file audio, the microphone and the delayed audio out.

Only the numpy mel code is imported here; the PortAudio and PyAV parts load when their modules are imported.
"""

from livemood.audio.mel import Lookahead, MelBuffer, mel_window, melspectrogram

__all__ = ["Lookahead", "MelBuffer", "mel_window", "melspectrogram"]
