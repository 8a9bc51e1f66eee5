"""Frechet distance: closed forms, an independent route, and its input checks."""

import numpy as np
import pytest
import torch

from mcm.evaluation import frechet_distance, frechet_distance_to_stats, gaussian_stats, sqrtm_psd


def _random_spd(d: int, generator: torch.Generator, rank: int | None = None) -> torch.Tensor:
    a = torch.randn(d, rank or d, generator=generator, dtype=torch.float64)
    return a @ a.T / (rank or d) + (0 if rank else 0.1) * torch.eye(d, dtype=torch.float64)


def _frechet_via_eigvals(mu1, s1, mu2, s2) -> float:
    """Independent route: tr sqrt(S1 S2) = sum of square roots of the eigenvalues of the
    non-symmetric product S1 S2 (they are real and >= 0), in numpy."""
    mu1, s1, mu2, s2 = (np.asarray(x, dtype=np.float64) for x in (mu1, s1, mu2, s2))
    eig = np.linalg.eigvals(s1 @ s2)
    trace_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def test_diagonal_covariances_match_closed_form():
    # For diagonal covariances d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    mu1 = torch.tensor([0.0, 1.0, -2.0])
    mu2 = torch.tensor([1.0, 1.0, 0.0])
    a = torch.tensor([1.0, 4.0, 9.0])
    b = torch.tensor([4.0, 1.0, 0.25])
    expected = (1 + 0 + 4) + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 0.5) ** 2
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(
        expected, abs=1e-12
    )


def test_one_dimensional_case_by_hand():
    # N(0, 1) vs N(3, 4): 9 + 1 + 4 - 2 * sqrt(4) = 10.
    d = frechet_distance(
        torch.zeros(1), torch.ones(1, 1), torch.full((1,), 3.0), torch.full((1, 1), 4.0)
    )
    assert d == pytest.approx(10.0, abs=1e-12)


@pytest.mark.parametrize("dim, rank", [(5, None), (16, None), (16, 6), (64, 20)])
def test_matches_independent_eigenvalue_route(dim, rank):
    g = torch.Generator().manual_seed(dim + (rank or 0))
    s1, s2 = _random_spd(dim, g, rank), _random_spd(dim, g)
    mu1 = torch.randn(dim, generator=g, dtype=torch.float64)
    mu2 = torch.randn(dim, generator=g, dtype=torch.float64)
    ours = frechet_distance(mu1, s1, mu2, s2)
    reference = _frechet_via_eigvals(mu1, s1, mu2, s2)
    assert ours == pytest.approx(reference, rel=1e-8, abs=1e-8)


def test_identity_symmetry_and_rotation_invariance():
    g = torch.Generator().manual_seed(3)
    s1, s2 = _random_spd(8, g), _random_spd(8, g)
    mu1, mu2 = torch.randn(8, generator=g, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-9
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        frechet_distance(mu2, s2, mu1, s1), rel=1e-10
    )
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    rotated = frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T)
    assert rotated == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-9)


def test_float32_inputs_are_computed_in_float64():
    # Identical float32 covariances with traces ~3e4: float32 arithmetic would leave
    # round-off ~1e-2 in tr(S1) + tr(S2) - 2 tr sqrt(S1 S2); float64 keeps a 1e-6 distance.
    g = torch.Generator().manual_seed(4)
    s = (_random_spd(32, g) * 1e3).float()
    mu = torch.zeros(32)
    shifted = mu.clone()
    shifted[0] = 1e-3
    d = frechet_distance(mu, s, shifted, s)
    assert d == pytest.approx(
        float(torch.tensor(1e-3, dtype=torch.float32).double() ** 2), rel=1e-3
    )
    assert d == frechet_distance(mu.double(), s.double(), shifted.double(), s.double())


def test_sqrtm_psd_squares_back_and_clamps_round_off():
    g = torch.Generator().manual_seed(5)
    s = _random_spd(10, g, rank=4)  # singular: tiny negative eigenvalues from round-off
    root = sqrtm_psd(s)
    assert root.dtype == torch.float64
    torch.testing.assert_close(root @ root, s, atol=1e-10, rtol=0)
    torch.testing.assert_close(root, root.T)
    assert not torch.isnan(root).any()


def test_gaussian_stats_match_numpy_and_distance_of_samples():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(500, 7, generator=g) * torch.arange(1, 8) + 2.0
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), x.double().numpy().mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        sigma.numpy(), np.cov(x.double().numpy(), rowvar=False), rtol=1e-10, atol=1e-12
    )
    assert frechet_distance_to_stats(x, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    # Two large samples of the same Gaussian are close; a shifted one is ~|shift|^2 away.
    y = torch.randn(4000, 7, generator=g, dtype=torch.float64)
    z = torch.randn(4000, 7, generator=g, dtype=torch.float64)
    same = frechet_distance(*gaussian_stats(y), *gaussian_stats(z))
    shifted = frechet_distance(*gaussian_stats(y), *gaussian_stats(z + 2.0))
    assert same < 0.05
    assert shifted == pytest.approx(28.0, rel=0.02)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="one feature size"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="torch.Tensor or numpy"):
        frechet_distance([0.0], [[1.0]], [0.0], [[1.0]])
