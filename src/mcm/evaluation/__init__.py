"""Evaluation: distances between feature distributions and model-quality metrics."""

from mcm.evaluation.frechet import (
    frechet_distance,
    frechet_distance_to_stats,
    gaussian_stats,
    sqrtm_psd,
)

__all__ = ["frechet_distance", "frechet_distance_to_stats", "gaussian_stats", "sqrtm_psd"]
