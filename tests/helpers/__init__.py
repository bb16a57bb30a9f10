"""Test helpers: a real local SLURM cluster, fallback configs for composing before real ones exist."""
