"""Plain ``nn.Module`` networks. No Lightning here: objectives take these as arguments.

Every network is built from the dataset's :class:`~gen_bench.data.DataSpec` plus its own
hyperparameters, so one model config serves every dataset of the same kind.
"""

from gen_bench.models.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gen_bench.models.nets.mlp import MLPDiscriminator, MLPGenerator

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator", "MLPGenerator"]

from gen_bench.models.nets.denoiser_mlp import MLPDenoiser  # noqa: E402
from gen_bench.models.nets.unet import UNet  # noqa: E402

__all__ += ["MLPDenoiser", "UNet"]

from gen_bench.models.nets.video import SpatialDiscriminator, TemporalDiscriminator, VideoGenerator  # noqa: E402

__all__ += ["SpatialDiscriminator", "TemporalDiscriminator", "VideoGenerator"]

from gen_bench.models.nets.resnet import ResNetDiscriminator, ResNetGenerator  # noqa: E402

__all__ += ["ResNetDiscriminator", "ResNetGenerator"]

from gen_bench.models.nets.biggan import (  # noqa: E402
    BigGANGenerator,
    ConditionalMLPGenerator,
    ProjectionDiscriminator,
    ProjectionMLPDiscriminator,
)

__all__ += ["BigGANGenerator", "ConditionalMLPGenerator", "ProjectionDiscriminator",
            "ProjectionMLPDiscriminator"]
