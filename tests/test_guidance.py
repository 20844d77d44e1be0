"""The distillation rules against hand-made predictions (no model needed)."""

import pytest
import torch

from nfsd.errors import ConfigError
from nfsd.distill.guidance import RULES, Predictions, csd_gradient, dds_gradient, distillation_loss, get_rule, nfsd_gradient, sds_gradient

T = 1000
ALPHAS = torch.linspace(0.999, 0.01, T)


def preds(t, e_y=1.0, e_neg=0.25, e_0=0.5, eps=0.125):
    b = len(t)
    full = lambda v: torch.full((b, 4, 2, 2), float(v))  # noqa: E731
    return Predictions(full(e_y), full(e_neg), full(e_0), full(eps), torch.tensor(t), ALPHAS)


def w(t):
    return 1.0 - ALPHAS[t].item()


def test_nfsd_switches_per_view_at_t_200():
    p = preds([199, 200])
    g = nfsd_gradient(p, scale=7.5)
    # t < 200: d_D = e_0 ; otherwise d_D = e_0 - e_neg.  d_C = e_y - e_0 = 0.5
    assert torch.allclose(g[0], torch.full_like(g[0], w(199) * (0.5 + 7.5 * 0.5)))
    assert torch.allclose(g[1], torch.full_like(g[1], w(200) * ((0.5 - 0.25) + 7.5 * 0.5)))


def test_nfsd_switch_scales_with_schedule_length():
    alphas = torch.linspace(0.999, 0.01, 50)  # 50-step schedule: the switch is at t = 10
    p = Predictions(*(torch.full((2, 1, 1, 1), v) for v in (1.0, 0.25, 0.5, 0.0)), torch.tensor([9, 10]), alphas)
    g = nfsd_gradient(p, scale=0.0)
    assert g[0].item() == pytest.approx((1 - alphas[9].item()) * 0.5)
    assert g[1].item() == pytest.approx((1 - alphas[10].item()) * 0.25)


def test_sds_uses_diffusers_guidance_convention():
    p = preds([500])
    g = sds_gradient(p, scale=100.0)
    guided = 0.5 + 100.0 * (1.0 - 0.5)  # e_0 + s (e_y - e_0), not (s + 1)
    assert g.flatten()[0].item() == pytest.approx(w(500) * (guided - 0.125), rel=1e-6)


def test_csd_is_the_scaled_classifier_direction_only():
    p = preds([10, 900], eps=123.0, e_neg=-7.0)  # eps and e_neg must not matter
    g = csd_gradient(p, scale=7.5)
    assert g[0, 0, 0, 0].item() == pytest.approx(w(10) * 7.5 * 0.5)
    assert g[1, 0, 0, 0].item() == pytest.approx(w(900) * 7.5 * 0.5)


def test_dds_is_the_difference_of_guided_predictions_target_minus_source():
    b = 2
    full = lambda v: torch.full((b, 4, 2, 2), float(v))  # noqa: E731
    p = Predictions(e_y=full(1.0), e_neg=None, e_0=full(0.5), eps=full(123.0), t=torch.tensor([10, 900]),
                    alphas_cumprod=ALPHAS, e_ref_y=full(0.75), e_ref_0=full(0.25))
    g = dds_gradient(p, scale=7.5)
    target = 0.5 + 7.5 * (1.0 - 0.5)      # cfg(z_t; y_target)
    source = 0.25 + 7.5 * (0.75 - 0.25)   # cfg(z_ref_t; y_source)
    assert g[0, 0, 0, 0].item() == pytest.approx(w(10) * (target - source))
    assert g[1, 0, 0, 0].item() == pytest.approx(w(900) * (target - source))


def test_dds_of_an_unchanged_edit_is_zero():
    """Same render, same prompt: the two branches are the same prediction and nothing moves."""
    e = torch.randn(3, 4, 2, 2)
    e0 = torch.randn(3, 4, 2, 2)
    p = Predictions(e, None, e0, torch.randn(3, 4, 2, 2), torch.tensor([5, 500, 999]), ALPHAS, e_ref_y=e, e_ref_0=e0)
    assert torch.equal(dds_gradient(p), torch.zeros_like(e))
    with pytest.raises(ValueError, match="e_ref_y"):
        dds_gradient(preds([500]))


def test_every_rule_names_the_predictions_it_reads():
    from nfsd.distill.guidance import rule_inputs

    assert [len(rule_inputs(mode)) for mode in RULES] == [3, 2, 2, 4]  # nfsd, sds, csd, dds (per view)
    assert rule_inputs("csd", negative_weight=1.0) == (("z", "y"), ("z", "neg"), ("z", "0"))
    assert rule_inputs("dds") == (("z", "y"), ("z", "0"), ("ref", "src"), ("ref", "0"))


def test_rules_by_name_and_unknown_mode():
    assert get_rule("nfsd") is nfsd_gradient and get_rule("sds") is sds_gradient and get_rule("csd") is csd_gradient
    assert get_rule("dds") is dds_gradient
    with pytest.raises(ConfigError, match="unknown mode 'vsd'.*nfsd, sds, csd, dds"):
        get_rule("vsd")


def test_loss_gradient_is_g_over_batch_and_nan_safe():
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    g = torch.randn(2, 4, 3, 3)
    g_bad = g.clone()
    g_bad[0, 0, 0, 0] = float("nan")
    distillation_loss(z, g_bad).backward()
    expected = g.clone()
    expected[0, 0, 0, 0] = 0.0
    assert torch.allclose(z.grad, expected / 2)


def test_loss_is_float32_for_half_latents():
    z = torch.randn(1, 4, 2, 2).half().requires_grad_()
    loss = distillation_loss(z, torch.ones(1, 4, 2, 2).half())
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(0.5 * 16)
