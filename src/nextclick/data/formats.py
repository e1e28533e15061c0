"""The raw logs nextclick reads and the bounds it reads them with: names and numbers only, so that the
command line can offer them without importing polars (readers.py and recipes.py do the reading)."""

LOG_FORMATS = ("diginetica", "yoochoose", "retailrocket", "csv", "parquet")

# The real logs have no malformed rows; losing more than this share means the wrong format or a
# damaged file, which must stop the run rather than quietly shrink the data.
MAX_BAD_FRACTION = 0.01

# 30 minutes of inactivity ends a session (session-rec preprocess_rr, used by DSAN; GRU4Rec's RSC15).
SESSION_GAP_SECONDS = 30 * 60

# whose preprocessing `data prepare` reproduces: the keys of recipes.RECIPES (tests/test_data_recipes.py)
RECIPE_NAMES = ("dsan", "narm", "srgnn")
