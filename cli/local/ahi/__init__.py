"""Building blocks of the local AWS HealthImaging emulator (see cli/local/ahi_emulator.py)."""
