"""Running one recipe in one process or many: data parallel (DDP) or fully sharded (FSDP2) under torchrun.

Under DDP every rank holds the whole model, so rank 0 alone evaluates and reads weights for checkpoints. Under
FSDP each rank holds a shard: evaluation and gathering weights are collective, so every rank takes part and rank 0
alone keeps the result.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist


class Parallel:
    """The process group and how the model is spread over it."""

    def __init__(self, strategy: str, rank: int, world: int, device: torch.device):
        self.rank, self.world, self.device = rank, world, device
        self.sharded = strategy == "fsdp" and world > 1
        self.is_main = rank == 0

    @property
    def evaluates(self) -> bool:
        """Whether this rank runs evaluations (all ranks under FSDP; rank 0 alone otherwise)."""
        return self.is_main or self.sharded

    def prepare(self, model, compute_dtype: torch.dtype | None):
        """Shard the model (FSDP) before the optimizer is built; a no-op otherwise. Returns the model."""
        if not self.sharded:
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.device.type, (self.world,))
        policy = (
            MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
            if compute_dtype
            else MixedPrecisionPolicy()
        )
        # One shard group per transformer block (the classes a model says must not be split), then the root for
        # the embeddings and heads. Parameters move to the device block by block, so the whole model never has to
        # fit on one GPU.
        blocks = set(getattr(model, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in blocks:
                fully_shard(module, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        return model

    def wrap(self, model):
        """The module the training step calls: DDP around the model, or the (already sharded) model itself."""
        if self.world == 1 or self.sharded:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def accumulate(self, train_model, sync: bool):
        """Context for one micro-batch's backward: gradients are reduced across ranks only when ``sync``."""
        if self.world == 1:
            return contextlib.nullcontext()
        if self.sharded:
            train_model.set_requires_gradient_sync(sync)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if sync else train_model.no_sync()

    def full_state(self, model, optimizer=None) -> tuple[dict | None, dict | None]:
        """Trainable weights (and optimizer state) as whole CPU tensors; collective under FSDP.

        Ranks other than 0 get ``(None, None)``.
        """
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            if optimizer is None:
                model_state, optim_state = get_model_state_dict(model, options=options), None
            else:
                model_state, optim_state = get_state_dict(model, optimizer, options=options)
            return (model_state, optim_state) if self.is_main else (None, None)
        if not self.is_main:
            return None, None
        return trainable_state(model), (optimizer.state_dict() if optimizer is not None else None)

    def load_state(self, model, model_state: dict | None, optimizer=None, optim_state: dict | None = None) -> None:
        """Put whole weights (and optimizer state) from ``full_state`` back.

        Weights alone (the best evaluation's): under FSDP rank 0 alone passes them (other ranks pass None) and sends
        each rank its shard, because only rank 0's disk has them. Weights with optimizer state (resuming): every
        rank passes the same dicts read from its own copy of the checkpoint (SageMaker downloads the checkpoint
        prefix to every instance); torch's rank-0 broadcast of optimizer state hangs when the optimizer has no
        state yet, as after a restart.
        """
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict
            from torch.distributed.fsdp import FSDPModule

            # The root keeps its parameters unsharded after a forward pass (an evaluation); loading needs shards.
            for module in model.modules():
                if isinstance(module, FSDPModule):
                    module.reshard()
            if optimizer is None:
                set_model_state_dict(
                    model, model_state or {}, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
                )
            else:
                if model_state is None or optim_state is None:
                    raise RuntimeError("resuming a sharded run needs the checkpoint's weights and optimizer state")
                set_state_dict(
                    model,
                    optimizer,
                    model_state_dict=model_state,
                    optim_state_dict=optim_state,
                    options=StateDictOptions(full_state_dict=True),
                )
            return
        _, unexpected = model.load_state_dict(model_state, strict=False)
        if unexpected:
            raise RuntimeError(f"saved weights do not match this model: unexpected keys {unexpected[:5]}")
        if optimizer is not None and optim_state is not None:
            optimizer.load_state_dict(optim_state)

    def sum(self, value: float) -> float:
        """``value`` summed over ranks."""
        if self.world == 1:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.item()

    def from_main(self, *flags: bool) -> tuple[bool, ...]:
        """Rank 0's values of ``flags`` on every rank."""
        if self.world == 1:
            return flags
        tensor = torch.tensor([1 if f else 0 for f in flags], device=self.device)
        dist.broadcast(tensor, src=0)
        return tuple(bool(v) for v in tensor.tolist())

    def gather(self, value) -> list | None:
        """Every rank's ``value`` (a picklable object) in rank order on rank 0; None on the others."""
        if self.world == 1:
            return [value]
        gathered = [None] * self.world if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The weights a checkpoint keeps: all of them for full fine-tuning, only the trainable ones for adapters."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    state = model.state_dict()
    if len(trainable) == len(list(model.parameters())):
        return {k: v.detach().cpu() for k, v in state.items()}
    return {k: v.detach().cpu() for k, v in state.items() if k in trainable}
