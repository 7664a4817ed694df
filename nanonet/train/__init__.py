"""NanoNet training: a teacher and a cohort of students from very few labels."""

from nanonet.extras import require

require("torch", "nanonet train")

from nanonet.train.args import TrainArgs  # noqa: E402
from nanonet.train.trainer import train  # noqa: E402

__all__ = ["TrainArgs", "train"]
