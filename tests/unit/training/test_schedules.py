"""The world trainers' optimizer: fused AdamW steps as the reference AdamW, on the schedule."""

import copy
import math

import torch

from loco_lightning.training.schedules import adamw_warmup_cosine, warmup_cosine


def test_the_fused_optimizer_steps_as_the_reference_adamw_on_the_warmup_cosine_schedule():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    reference = copy.deepcopy(net)
    fused = adamw_warmup_cosine(net.parameters(), 1e-2, 0.01, 3, 10, 0.1)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.01)
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, warmup_cosine(3, 10, 0.1))
    assert fused["optimizer"].defaults["fused"] and fused["lr_scheduler"]["interval"] == "step"
    x, y = torch.randn(32, 8), torch.randn(32, 4)
    lrs = []
    for _ in range(10):
        for model, opt, sched in (
            (net, fused["optimizer"], fused["lr_scheduler"]["scheduler"]),
            (reference, ref_opt, ref_sched),
        ):
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        lrs.append(ref_opt.param_groups[0]["lr"])
    for p, q in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert fused["optimizer"].param_groups[0]["lr"] == lrs[-1]
    # warm-up to the peak at step 3, cosine down to 0.1 of it at step 10
    assert math.isclose(lrs[1], 1e-2) and math.isclose(lrs[-1], 1e-3)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
