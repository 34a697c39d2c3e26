"""Files in and out of generation, one idea a module:

- :mod:`~nuwa_xl_jax.io.storyboards`: a storyboard file -> one prompt per frame (and its checks);
- :mod:`~nuwa_xl_jax.io.videos`: frames -> .mp4 / .gif / PNG folder, streamed, and read back;
- :mod:`~nuwa_xl_jax.io.contact_sheets`: each level's keyframes -> one PNG.

The names users call are re-exported here (``from nuwa_xl_jax.io import read_video``); the library
itself imports from the modules.
"""
from nuwa_xl_jax.io.contact_sheets import KeyframeCollector, LevelKeyframes, contact_sheet
from nuwa_xl_jax.io.storyboards import (
           Scene,
           Storyboard,
           StoryboardError,
           check_vocabulary,
           load_storyboard,
)
from nuwa_xl_jax.io.videos import VideoWriter, check_output, read_video, to_uint8, video_kind

__all__ = ["KeyframeCollector", "LevelKeyframes", "Scene", "Storyboard", "StoryboardError",
           "VideoWriter", "check_output", "check_vocabulary", "contact_sheet", "load_storyboard",
           "read_video", "to_uint8", "video_kind"]
