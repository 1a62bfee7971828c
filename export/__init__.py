"""srdeploy export package."""
