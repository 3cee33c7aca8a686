"""Capture: load a transformer, run it on a prompt, keep every layer's hidden states."""
