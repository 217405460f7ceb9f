"""Adam, written out for the small networks siren3d trains.

``torch.optim.Adam`` does the same arithmetic, but building one imports ``torch._dynamo`` (about
1.4 s on a 2-core CPU, measured with cProfile on ``siren3d fit``), a fixed cost paid by every fit for
a compiler it never uses. This one uses the same update as torch's (bias-corrected moments,
``eps`` added after the square root) with the multi-tensor ``_foreach`` kernels, and reads and
writes the same ``state_dict`` layout, so checkpoints written with either resume with either.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch


class Adam:
    """Adam without weight decay or AMSGrad; ``param_groups[0]["lr"]`` may be changed between steps."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("Adam got an empty parameter list")
        self.param_groups = [{"lr": float(lr), "betas": tuple(betas), "eps": float(eps), "weight_decay": 0.0,
                              "amsgrad": False, "maximize": False}]
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        m = [self.exp_avg[i] for i in live]
        v = [self.exp_avg_sq[i] for i in live]
        self.steps += 1
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
        step_size = lr / (1 - beta1 ** self.steps)
        bias2_sqrt = math.sqrt(1 - beta2 ** self.steps)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, m, denom, -step_size)

    def state_dict(self) -> dict:
        """The layout of ``torch.optim.Adam.state_dict()``: parameters by index, moments, float step."""
        state = {i: {"step": torch.tensor(float(self.steps)), "exp_avg": self.exp_avg[i].clone(),
                     "exp_avg_sq": self.exp_avg_sq[i].clone()} for i in range(len(self.params))}
        group = {**self.param_groups[0], "params": list(range(len(self.params)))}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, sd: dict) -> None:
        """Restore from :meth:`state_dict` (or torch's Adam); raises ValueError on a mismatch."""
        if not isinstance(sd, dict) or not isinstance(sd.get("state"), dict) or not isinstance(
                sd.get("param_groups"), list) or len(sd["param_groups"]) != 1:
            raise ValueError("not an Adam state (expected 'state' and one parameter group)")
        group = sd["param_groups"][0]
        if list(group.get("params", [])) != list(range(len(self.params))):
            raise ValueError(f"the optimizer state is for {len(group.get('params', []))} parameters, "
                             f"the network has {len(self.params)}")
        steps, m, v = set(), [], []
        for i, p in enumerate(self.params):
            s = sd["state"].get(i)
            if s is None:  # never stepped
                m.append(torch.zeros_like(p)), v.append(torch.zeros_like(p)), steps.add(0)
                continue
            a, b = s["exp_avg"], s["exp_avg_sq"]
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != p.shape \
                    or b.shape != p.shape:
                raise ValueError(f"the optimizer moments of parameter {i} do not match its shape {tuple(p.shape)}")
            m.append(a.detach().to(p.device, p.dtype).clone())
            v.append(b.detach().to(p.device, p.dtype).clone())
            steps.add(int(float(s["step"])))
        if len(steps) != 1:
            raise ValueError("the optimizer state holds different step counts for different parameters")
        self.steps = steps.pop()
        self.exp_avg, self.exp_avg_sq = m, v
        self.param_groups[0].update({k: group[k] for k in ("lr", "eps") if k in group})
        if "betas" in group:
            self.param_groups[0]["betas"] = tuple(float(b) for b in group["betas"])
