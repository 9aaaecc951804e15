"""ALSA capture and playback, resampling and played-sample accounting."""
