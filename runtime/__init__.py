"""srdeploy runtime: backends, inference, tiling, image I/O, metrics."""
