"""Data shipped with floorgate: device profiles and example floor files (the top-level config/ directory)."""
