"""The scene: PyVista rendering of scan files (movies, stills, window, exports)."""
