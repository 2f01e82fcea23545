"""The latent explorer: a run's latent space in the browser (`core` without the web, `app` with)."""
