"""Models: the VAE module, the networks inside it, and the decoder likelihoods."""

from vaelab.models.likelihoods import LossTerms, log_likelihood, negative_elbo
from vaelab.models.vae import VAE, VAEOutput, evaluating

__all__ = ["VAE", "LossTerms", "VAEOutput", "evaluating", "log_likelihood", "negative_elbo"]
