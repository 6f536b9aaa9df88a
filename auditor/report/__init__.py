"""HTML and PDF audit reports rendered from a stored run."""
