"""Reading media: what an upload or an output holds, and the MP3 stream copy, all done by PyAV
in libav processes so that a hostile file can crash only one of those.

Parent side (what services import): `MediaPool` (`pool.py`), the descriptions it returns
(`info.py`) and the wire between the two sides (`protocol.py`). Child side: the process's loop
(`child.py`) and the PyAV code it runs (`libav/`); no service imports those.
"""

from shared.media.info import MediaInfo, OptionMismatch, OutputMedia, TrackActivity
from shared.media.pool import MediaPool

__all__ = ["MediaInfo", "MediaPool", "OptionMismatch", "OutputMedia", "TrackActivity"]
