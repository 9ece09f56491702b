"""Objectives (LightningModules) and how to build one from a config and a data spec."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gen_bench.data.spec import DataSpec
from gen_bench.models.base import GenerativeModule

__all__ = ["GenerativeModule", "build_model"]

# read by train.py and the callbacks, not by the objective
_NOT_ARGUMENTS = ("name", "nets", "ema", "training_sampler", "eval_every_n_steps")


def build_model(model_cfg: DictConfig, spec: DataSpec) -> GenerativeModule:
    """Instantiate a model config for a dataset.

    ``model_cfg.nets`` holds one set of networks per data kind (``image``, ``toy2d``, ``video``);
    the set for ``spec.kind`` is built with ``spec`` and passed to the objective by role
    (``generator``, ``discriminator``, ``denoiser``...).
    """
    # Resolve first: a model config may interpolate keys outside ``model`` (``${seed}``), which a
    # masked copy, detached from the root, could no longer reach.
    model_cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    name = model_cfg.get("name", model_cfg.get("_target_"))
    nets_cfg = model_cfg.get("nets") or {}
    if spec.kind not in nets_cfg:
        raise ValueError(
            f"model {name!r} has no networks for {spec.kind} data; it supports: "
            f"{', '.join(nets_cfg) or 'none'}. Choose another data= or model="
        )
    nets = {role: instantiate(node, _partial_=True)(spec=spec) for role, node in nets_cfg[spec.kind].items()}
    rest = OmegaConf.masked_copy(model_cfg, [k for k in model_cfg if k not in _NOT_ARGUMENTS])
    model = instantiate(rest, _partial_=True)(spec=spec, **nets)
    if not isinstance(model, GenerativeModule):
        raise TypeError(f"model {name!r} built a {type(model).__name__}, not a GenerativeModule")
    if spec.task is not None and not model.image_to_image:
        raise ValueError(f"model {name!r} generates from noise, but the data has a paired task "
                         f"(task={spec.task.name}): use an image-to-image model (model=i2i_regression | "
                         "i2i_perceptual | i2i_gan | i2i_diffusion), or drop task=")
    return model
