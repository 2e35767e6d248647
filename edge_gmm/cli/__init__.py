"""The `edge-gmm` command line. Nothing imports this package; it imports the library lazily."""
