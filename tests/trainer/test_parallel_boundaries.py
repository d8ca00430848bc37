"""What parallelize and build_optimizer set up, checked in one gloo process (a process group of one, in a
subprocess so this pytest process stays without one): FSDP2's mixed precision gathers bf16 copies of the fp32
shards when asked, and ZeRO-1's optimizer decays the matrices only. The two-rank runs of test_parallel.py compare
losses in fp32, where neither shows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule
    from gristmill.trainer import parallel
    from gristmill.trainer.model import Transformer, model_config

    dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
    out = {}
    for mode in ("zero2", "zero3"):
        for bf16 in (False, True):
            torch.manual_seed(0)
            model = parallel.parallelize(Transformer(model_config("tiny", max_seq_len=16)), mode, world_size=2,
                                         device=torch.device("cpu"), bf16=bf16)
            seen = []
            model.layers[0].attn.wq.register_forward_pre_hook(lambda m, a: seen.append(str(m.weight.dtype)))
            ids = torch.randint(0, 256, (2, 17))
            loss = model(ids[:, :-1], ids[:, 1:])
            loss.backward()
            grad = model.layers[0].attn.wq.weight.grad
            out[f"{mode}:{bf16}"] = {"compute": seen, "stored": str(model.layers[0].attn.wq.weight.dtype),
                                     "grad": str(grad.dtype)}
            out[f"{mode}:units"] = [isinstance(m, FSDPModule) for m in (model, *model.layers)]
    torch.manual_seed(0)
    model = parallel.parallelize(Transformer(model_config("tiny", max_seq_len=16)), "zero1", world_size=2,
                                 device=torch.device("cpu"))
    opt = parallel.build_optimizer(model, "zero1", world_size=2, lr=1e-3, weight_decay=0.25, betas=(0.8, 0.9),
                                   eps=1e-3)
    out["zero1"] = {"type": type(opt).__name__,
                    "groups": [{"weight_decay": g["weight_decay"], "dims": sorted({p.dim() for p in g["params"]}),
                                "n": len(g["params"]), "betas": list(g["betas"]), "eps": g["eps"]}
                               for g in opt.param_groups],
                    "params": len(list(model.parameters()))}
    dist.destroy_process_group()
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "1", "RANK": "0"}
    rendezvous = tmp_path_factory.mktemp("pg") / "store"  # a file, not a port another run may hold
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(rendezvous)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["zero2", "zero3"])
def test_fsdp_computes_in_bf16_over_fp32_shards_when_asked(layout, mode):
    """bf16: a block's forward sees bf16 weights while the stored shards and their gradients stay fp32 (the
    policy's reduce_dtype); without bf16 everything is fp32 (mutants: param_dtype never bf16; no reduce_dtype)."""
    assert layout[f"{mode}:True"] == {"compute": ["torch.bfloat16"], "stored": "torch.float32", "grad": "torch.float32"}
    assert layout[f"{mode}:False"] == {"compute": ["torch.float32"], "stored": "torch.float32", "grad": "torch.float32"}


def test_zero1_decays_the_matrices_only_with_the_configured_adamw(layout):
    """ZeroRedundancyOptimizer holds two groups as plain AdamW does: the matrices at weight_decay, the norm gains
    at 0, every parameter in one of them, and the betas and eps given (mutants: the gains' group not added, so
    they were never updated; the matrices' decay dropped)."""
    z = layout["zero1"]
    assert z["type"] == "ZeroRedundancyOptimizer"
    assert [(g["weight_decay"], g["dims"]) for g in z["groups"]] == [(0.25, [2]), (0.0, [1])]
    assert sum(g["n"] for g in z["groups"]) == z["params"]
    assert all(g["betas"] == [0.8, 0.9] and g["eps"] == 1e-3 for g in z["groups"])


@pytest.mark.parametrize("mode", ["zero2", "zero3"])
def test_fsdp_shards_each_block_as_its_own_unit(layout, mode):
    """fully_shard per block, then the root (torchtitan's order): each block gathers and frees its own weights,
    so ZeRO-3 holds one block's at a time (mutant: only the root sharded, the whole model gathered at once)."""
    assert all(layout[f"{mode}:units"]) and len(layout[f"{mode}:units"]) == 3  # the root and the tiny model's 2 blocks
