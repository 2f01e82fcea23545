"""Models: the VAE module, the networks inside it, the priors, and the decoder likelihoods."""

from vaelab.models.hierarchical import HierarchicalVAE, build_model
from vaelab.models.likelihoods import LossTerms, log_likelihood, negative_elbo
from vaelab.models.vae import VAE, VAEOutput, evaluating

__all__ = [
    "VAE",
    "HierarchicalVAE",
    "LossTerms",
    "VAEOutput",
    "build_model",
    "evaluating",
    "log_likelihood",
    "negative_elbo",
]
