"""Speech/music discrimination with a 1D convolutional network on the waveform, in JAX/Flax.

``__version__`` is the package's version, the one place it is written: pyproject.toml reads it
from here (``[tool.setuptools.dynamic]``), and every run's summary.json (``versions``), benchmark
JSON and exported model records it.
"""

__version__ = "0.1.0"
