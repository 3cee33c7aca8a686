"""Infrastructure every stage shares: errors, safe outputs, the tensor file format, signals and
start-up."""
