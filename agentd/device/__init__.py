"""Physical I/O of the device: GPIO button and LED, sound cues."""
