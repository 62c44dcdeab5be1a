"""`jepa bench`: the project against the PyTorch reference, side by side in one run (see `jepa.bench.run`)."""
