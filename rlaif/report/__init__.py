"""One HTML page of any run directory, read from its files alone (`rlaif report`, the `report` stage)."""
