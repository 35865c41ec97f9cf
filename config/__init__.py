"""Data shipped with floorgate: device profiles and example floors (top-level config/)."""
