"""srdeploy benchmarks package."""
