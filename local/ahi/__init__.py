"""Building blocks of the local AWS HealthImaging emulator (see local/ahi/emulator.py)."""
