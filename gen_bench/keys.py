"""Log keys, defined once: ``{stage}/{name}``."""

LOSS_D = "train/loss_d"
LOSS_G = "train/loss_g"
D_REAL = "train/d_real"
D_FAKE = "train/d_fake"
NOISE_SIGMA = "train/noise_sigma"
WASSERSTEIN = "train/wasserstein"
GRADIENT_PENALTY = "train/gradient_penalty"
LOSS_CRITIC = "train/loss_critic"
LOSS_DIFFUSION = "train/loss"
BITS_PER_DIM = "train/bpd"  # an autoregressive model's loss: NLL of the batch in bits per dimension
LR = "train/lr"
LOSS_D_SPATIAL = "train/loss_d_spatial"
LOSS_D_TEMPORAL = "train/loss_d_temporal"
SCORE_REAL = "train/score_real_{}"  # mean raw D score of real clips, per discriminator (DVD-GAN)
SCORE_FAKE = "train/score_fake_{}"
R1_PENALTY = "train/r1_penalty"  # E||grad_x D||^2 on real data (R3GAN)
R2_PENALTY = "train/r2_penalty"  # the same on generated data
LOSS_PIXEL = "train/loss_pixel"  # image-to-image models: the pixel (L2 / L1) term of the loss
LOSS_PERCEPTUAL = "train/loss_perceptual"  # the distance in a feature network's activations
LOSS_ADVERSARIAL = "train/loss_adversarial"  # the generator's adversarial term (-log D)
