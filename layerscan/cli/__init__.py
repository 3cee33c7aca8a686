"""The `layerscan` command line: parse, call the pipeline, print (entry point: `main.main`)."""
