"""Command-line tools of the runtime: edge-infer, edge-verify, edge-bench (thin shells over edge.runtime)."""
