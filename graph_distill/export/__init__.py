"""`graph-distill export`: a dataset in training formats, with a dataset card."""
