"""FSDP-QLoRA as far as a CPU allows: accelerate's FSDP plugin wants a GPU, but torch's FSDP runs on the
CPU with gloo. Two processes shard the train stage's own 4-bit base (lib/models.load_base_for_training
under ACCELERATE_USE_FSDP, so the codes are stored as bf16 and the norms stay bf16), wrapped as the
Trainer wraps a PEFT model (peft's fsdp_auto_wrap_policy), take one SGD step on their halves of a batch,
and gather the full state dict: its LoRA weights equal one unsharded process's step on the whole
batch within bf16 rounding. Loaded as DDP loads it (uint8 codes, fp32 norms), FSDP cannot flatten it."""

import gc
import os

import pytest
import torch

from tests.helpers import free_port, one_rank_process_group, tiny_random_qwen3

LENGTH, ROWS = 24, 4  # the batch: 4 rows of 24 random tokens, 2 per process
UNIT = torch.finfo(torch.bfloat16).eps


def _base(folder, fsdp: bool):
    from lib.models import load_base_for_training
    from lib.training.trainer import attach_lora

    if fsdp:
        os.environ["ACCELERATE_USE_FSDP"] = "true"  # what `accelerate launch` with fsdp_qlora.yaml sets
    model = load_base_for_training(str(folder), "nf4", True, torch.bfloat16, gradient_checkpointing=True)
    torch.manual_seed(0)  # LoRA A's initialisation: the same in every process
    model, _ = attach_lora(model, r=4, alpha=8, dropout=0.0, target_modules=None)
    with torch.no_grad():  # LoRA B starts at zero; values make A's gradient depend on the data too
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
    return model.train()


def _batch():
    return torch.randint(5, 1000, (ROWS, LENGTH), generator=torch.Generator().manual_seed(0))


def _sgd_step(model, ids) -> None:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    optimizer.step()


def _sharded_worker(rank: int, folder, port: int, out) -> None:
    import torch.distributed as dist
    from peft.utils.other import fsdp_auto_wrap_policy
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model = _base(folder, fsdp=True)
    total = sum(p.numel() for p in model.parameters())
    wrapped = FSDP(model, auto_wrap_policy=fsdp_auto_wrap_policy(model), device_id=torch.device("cpu"),
                   use_orig_params=False)
    held = sum(p.numel() for p in wrapped.parameters())  # this rank's shard of every flat parameter
    _sgd_step(wrapped, _batch()[rank * 2:(rank + 1) * 2])  # FSDP averages the two halves' gradients
    with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=False, rank0_only=False)):
        state = {name: tensor.clone() for name, tensor in wrapped.state_dict().items() if "lora_" in name}
    if rank == 0:
        torch.save({"lora": state, "held": held, "total": total}, out)
    # Leave together, with nothing left holding the group: a rank that tears it down at exit, or while
    # the other still writes, can abort after its work is done (lib.devices.end_process_group).
    del wrapped, model
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def tiny_qwen3_folder(tmp_path_factory, smollm2_tokenizer):
    folder = tmp_path_factory.mktemp("tiny-qwen3")
    tiny_random_qwen3(smollm2_tokenizer).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_two_processes_shard_the_4bit_base_and_their_step_is_the_unsharded_one(tiny_qwen3_folder, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    out = tmp_path / "sharded.pt"
    torch.multiprocessing.spawn(_sharded_worker, args=(tiny_qwen3_folder, free_port(), out), nprocs=2)
    sharded = torch.load(out)
    assert sharded["held"] <= 0.55 * sharded["total"]  # each process holds about half of the base

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # the same loading, one process, no sharding
    model = _base(tiny_qwen3_folder, fsdp=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}
    _sgd_step(model, _batch())
    assert sharded["lora"].keys() == before.keys()
    for name, start in before.items():
        # The step itself (SGD, lr 1: minus the gradient), sharded against unsharded: the same bf16 sums
        # split over two processes, within 8 bf16 units of the step's largest element (measured: under one;
        # one process's half of the batch alone would miss by far more than 8).
        step = dict(model.named_parameters())[name].detach().float() - start.float()
        sharded_step = sharded["lora"][name].float() - start.float()
        torch.testing.assert_close(sharded_step, step, rtol=0, atol=8 * UNIT * float(step.abs().max()), msg=name)


def test_loaded_as_for_ddp_the_4bit_base_cannot_be_flattened_by_fsdp(tiny_qwen3_folder, monkeypatch):
    """Why the FSDP launch stores the codes as bf16 and keeps the norms bf16: peft's preparation for DDP
    leaves uint8 codes and fp32 norms in one decoder layer, which FSDP refuses to flatten."""
    import torch.distributed as dist
    from peft.utils.other import fsdp_auto_wrap_policy
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    from lib.errors import InputError
    from lib.models import resolve_quant_storage

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    model = _base(tiny_qwen3_folder, fsdp=False)
    assert {p.dtype for p in model.parameters()} >= {torch.uint8, torch.float32}
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert resolve_quant_storage("auto", torch.bfloat16) == torch.bfloat16
    with pytest.raises(InputError, match="quant.quant_storage uint8: FSDP shards a 4-bit base only when"):
        resolve_quant_storage("uint8", torch.bfloat16)
    assert not dist.is_initialized(), "a process group is already set up in this worker"
    with one_rank_process_group(), pytest.raises(ValueError, match="flatten"):
        FSDP(model, auto_wrap_policy=fsdp_auto_wrap_policy(model), device_id=torch.device("cpu"))
