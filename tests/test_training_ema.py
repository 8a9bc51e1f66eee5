"""The one EMA (mcm.training.ema): the motion head's target copy, the LoRA target, the world
teacher's warm-up decay."""

import pytest
import torch

from mcm.models import attach_lora, load_teacher, lora_parameters
from mcm.motion import LearnableMotionHead
from mcm.training.ema import EMA


def test_update_matches_hand_computation_and_the_copy_is_frozen():
    online = LearnableMotionHead(2, hidden=4, num_groups=2)
    ema, average = EMA.of_module(online, decay=0.95)
    assert all(not p.requires_grad for p in average.parameters())
    before = {k: v.clone() for k, v in average.state_dict().items()}
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    ema.update()
    online_state = online.state_dict()
    for k, v in average.state_dict().items():
        torch.testing.assert_close(v, 0.95 * before[k] + 0.05 * online_state[k])


def test_warmup_decay_forgets_the_start_quickly():
    p = torch.zeros(3)
    ema = EMA([p], decay=0.999, warmup=True)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        p.add_(1.0)
        ema.update()
    assert decays == [pytest.approx(0.1), pytest.approx(2 / 11), pytest.approx(3 / 12)]
    # shadow after three steps towards 1, 2, 3 with those decays
    expected = 0.0
    for d, target in zip(decays, (1.0, 2.0, 3.0)):
        expected = d * expected + (1 - d) * target
    torch.testing.assert_close(ema.shadow[0], torch.full((3,), expected))


def test_state_round_trip_and_bad_input():
    online = LearnableMotionHead(2, hidden=4, num_groups=2)
    ema, average = EMA.of_module(online, decay=0.5)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    ema.update()
    restored, copy = EMA.of_module(LearnableMotionHead(2, hidden=4, num_groups=2), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    x = torch.randn(1, 2, 2, 3, 3)
    torch.testing.assert_close(copy(x), average(x), rtol=0, atol=0)
    assert restored.num_updates == 1
    with pytest.raises(ValueError, match="decay"):
        EMA(online.parameters(), decay=1.5)
    with pytest.raises(ValueError, match="does not match"):
        EMA.of_module(LearnableMotionHead(2, hidden=4, num_groups=2, num_layers=2), 0.5)[
            0
        ].load_state_dict(ema.state_dict())


def test_lora_target_is_swapped_in_and_out(tiny_dirs):
    bundle = load_teacher(str(tiny_dirs["modelscope"]), device="cpu")
    den = bundle.denoiser
    attach_lora(den, rank=2, alpha=2)
    ema = EMA(lora_parameters(den), decay=0.9)
    start = [p.detach().clone() for p in lora_parameters(den)]
    with torch.no_grad():
        for p in lora_parameters(den):
            p.add_(1.0)
    ema.update()
    for s, p0 in zip(ema.shadow, start):
        torch.testing.assert_close(s, p0 + 0.1)
    live = [p.detach().clone() for p in lora_parameters(den)]
    x = torch.randn(1, 4, 2, 16, 16)
    t = torch.tensor([500])
    emb = bundle.text_encoder(["a red circle moving left"])
    with torch.no_grad():
        out_live = den(x, t, emb)
        with ema.swapped_in():
            for p, s in zip(lora_parameters(den), ema.shadow):
                assert torch.equal(p, s)
            out_ema = den(x, t, emb)
        assert not torch.equal(out_ema, out_live)
    for p, w in zip(lora_parameters(den), live):
        assert torch.equal(p, w)
