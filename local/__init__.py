"""The embedded local stack (``dicomctl dev``/``demo``, the end-to-end tests, the workflow benchmark):
moto in server mode with our adapters, the Lambda worker processes, the HealthImaging emulator."""
