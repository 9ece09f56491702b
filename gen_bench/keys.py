"""Log keys, defined once: ``{stage}/{name}``."""

LOSS_D = "train/loss_d"
LOSS_G = "train/loss_g"
D_REAL = "train/d_real"
D_FAKE = "train/d_fake"
NOISE_SIGMA = "train/noise_sigma"
REAL_TARGET = "train/real_target"
