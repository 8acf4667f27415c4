"""A torch Optimizer that holds another optimizer instead of subclassing it.

torch's LR schedulers and ``GradScaler`` check ``isinstance(opt, torch.optim.Optimizer)`` and
read ``opt.param_groups``; wrappers such as ZeroOptimizer and DistributedOptimizer derive from
this class (statically) so they pass, while the user's optimizer class is only ever composed.

    class Wrapper(ComposedOptimizer):
        def step(self, closure=None): ...; return self.optimizer.step()
"""
from __future__ import annotations

from collections import OrderedDict

import torch


class ComposedOptimizer(torch.optim.Optimizer):
    """``param_groups``, ``state`` and ``defaults`` are the wrapped optimizer's."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        # torch.optim.Optimizer.__init__ would build param groups of its own; we only need the
        # hook tables its step/state_dict wrappers consult.
        self.optimizer = optimizer
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    def add_param_group(self, param_group) -> None:
        raise NotImplementedError(f"{type(self).__name__} fixes its parameters at construction; "
                                  "pass every param group to the constructor")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r})"
