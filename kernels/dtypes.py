"""The table dtypes the kernels take: one list, read by the tables, the loader and validation."""

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
