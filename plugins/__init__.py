"""srdeploy plugins package."""
