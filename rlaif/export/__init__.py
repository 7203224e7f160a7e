"""The stages' records as TRL-native datasets (rows), one row per pair (pairs), `rlaif export` (publish)."""
