"""Diffusion maths apart from any network: schedules, the Gaussian process, samplers."""

from gen_bench.diffusion.process import GaussianDiffusion
from gen_bench.diffusion.samplers import DDIMSampler, DDPMSampler, Sampler, SamplerFactory, sample_loop
from gen_bench.diffusion.schedules import cosine_beta_schedule, linear_beta_schedule

__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "GaussianDiffusion",
    "Sampler",
    "SamplerFactory",
    "cosine_beta_schedule",
    "linear_beta_schedule",
    "sample_loop",
]
