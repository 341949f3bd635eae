"""The figures and slider panels of each notebook, one module per notebook, so that
a notebook cell is a single call (``demo.noise_vs_batch_size()``), never pasted code."""
