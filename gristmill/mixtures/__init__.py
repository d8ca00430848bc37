"""Data mixtures: a YAML spec becomes a mixture manifest (`mix build`, `mix sweep`), and `loader.MixtureLoader`
draws training batches by it."""
