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

# DPM-Solver++ and flow matching (the straight path and its ODE samplers)
from gen_bench.diffusion.dpm_solver import DPMSolverPP  # noqa: E402
from gen_bench.diffusion.flow import (  # noqa: E402
    EulerSampler,
    FlowSampler,
    HeunSampler,
    RectifiedFlow,
    flow_sample_loop,
)
from gen_bench.diffusion.samplers import MultistepSampler, sampler_class  # noqa: E402

__all__ += ["DPMSolverPP", "EulerSampler", "FlowSampler", "HeunSampler", "MultistepSampler", "RectifiedFlow",
            "flow_sample_loop", "sampler_class"]

# RePaint: inpainting with any DDPM, no training
from gen_bench.diffusion.repaint import renoise, repaint_levels, repaint_loop, repaint_passes  # noqa: E402

__all__ += ["renoise", "repaint_levels", "repaint_loop", "repaint_passes"]
