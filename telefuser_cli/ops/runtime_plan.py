"""What a generic runtime needs to know about a DiT class, declared on the class as data.

A DiT class sets ``runtime_plan = RuntimePlan(...)`` and runs its forward as four stages that the runtime
(``telefuser_cli.runtime.transforms``) can also drive itself::

    state = model.embed(*inputs)            # a dataclass: residual streams, time embedding, RoPE, ...
    for i in range(len(blocks)):
        state = model.run_block(i, state)   # block i updates the residual streams
    out = model.project_out(state)          # per token: [B, L, out]
    return model.unpatchify(out, state)

Compile, step caching, block-sequential and model offload and sequence parallelism read only this plan and
these stages: the runtime never imports a model class, and no model carries runtime code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimePlan:
    """The runtime-facing structure of a DiT class (field names refer to the model and its stage state).

    blocks: attribute of the ``nn.ModuleList`` of repeated blocks (compiled one by one, offloaded one by one).
    block_type: their class (each block is one compiled region; all share one trace).
    streams: state fields the blocks update that are read after the last block, the residual streams
        ``[B, L_s, C]``; the first one's first-block residual decides the step cache, and every listed
        stream's rest-of-blocks residual is cached (a stream only the blocks read need not be listed).
    branch: state field identifying the guidance branch (the embedded context): the step cache keeps one
        reference per branch.
    attention: state field holding the video self-attention function the blocks call; sequence parallelism
        swaps it for the distributed one.
    split: ``(state field, token dim)`` pairs split over sequence-parallel ranks after ``embed`` (a field whose
        size on that dim is not the token count, e.g. one timestep for all tokens, is left whole); the output
        of ``project_out`` is gathered on its dim 1 before ``unpatchify``. Empty: sequence parallelism is not
        supported by this class.
    heads: config attribute holding the attention head count (the Ulysses degree must divide it).
    keep_fp32: parameter-name substrings a loader keeps in float32 (see the class's ``keep_fp32``).
    """

    blocks: str
    block_type: type
    streams: tuple[str, ...]
    branch: str
    attention: str
    split: tuple[tuple[str, int], ...] = ()
    heads: str = ""
    keep_fp32: tuple[str, ...] = ()

    @property
    def sequence_parallel(self) -> bool:
        return bool(self.split)
