"""`graph-distill report`: a dataset's profile, quality figures, plots and viewer."""
