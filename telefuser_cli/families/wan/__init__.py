"""The Wan family: ``spec`` (torch-free checks), ``pipeline`` (the driver's steps and ``WanDenoiser``), the
inputs it samples from (``inputs``: text features and noise; ``image`` and ``image_cond``: the image
condition of i2v / flf2v), and ``tiny`` checkpoints."""
