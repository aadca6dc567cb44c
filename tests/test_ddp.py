"""Two-process DDP on CPU (gloo) through Lightning: evaluation, the masking pass and exemplar selection are sharded
across ranks and gathered, so the memory and results equal a single process's (with lr=0, which isolates the
sharded end-of-phase work: exact); and training on 2 processes at the same effective batch gives the single
process's numbers to float rounding (the same global batches and per-sample dropout; the gradients are summed in
another order). Also: checkpoints are written once, a DDP run resumes, and length-grouped batches work under DDP."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["demo", "emm", "num_phases=2", "max_epoch=1", "limit_train_batches=2", "hidden_size=32", "num_layers=1",
        "num_heads=2", "image_size=64", "max_text_len=32", "progress_bar=False", "accelerator=cpu", "lr=0",
        "mask_figure=0"]


def run(tmp_path, demo_root, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "run.py", "with", *ARGS, f"log_dir={tmp_path}", f"data_root={demo_root}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return Path(proc.stdout.strip().splitlines()[-1])


def memory_of(run_dir: Path, phase: int) -> dict:
    state = torch.load(run_dir / "checkpoints" / f"phase_{phase}.pt", weights_only=True)
    return state["method"]["memory"]["classes"]


def test_two_process_ddp_equals_single_process_and_resumes(tmp_path, demo_root):
    single = run(tmp_path, demo_root, "devices=1", "exp_name=single")
    ddp = run(tmp_path, demo_root, "devices=2", "strategy=ddp", "exp_name=ddp", "stop_after_phase=0")
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["phase_0.pt"]  # one file, no rank copies
    ddp = run(tmp_path, demo_root, "devices=2", "strategy=ddp", "exp_name=ddp")  # resumes after phase 0
    # length-grouped batches under DDP: Lightning puts its DistributedSampler inside our batch sampler
    grouped = run(tmp_path, demo_root, "devices=2", "strategy=ddp", "exp_name=ddp_grouped", "length_group_window=2")
    a, b, c = (json.loads((d / "results.json").read_text()) for d in (single, ddp, grouped))
    a.pop("exp_name"), b.pop("exp_name"), c.pop("exp_name")
    # the keys that change results: devices and strategy are not among them, length_group_window is
    configs = [r.pop("results_config") for r in (a, b, c)]
    assert configs[0] == configs[1] and {k: v for k, v in configs[2].items() if configs[0].get(k) != v} == {
        "length_group_window": 2}
    # Exact, though the runs compute in different processes and batches: results.json and the memory hold only
    # discrete outcomes (per-class counts, chosen exemplars, masks, uint8 pixels) of float decisions that sit far
    # from a tie here. Measured on this run: a sample's logits move by < 1e-8 between a batch of 1 and its batch,
    # against a smallest top-2 logit margin of 6e-3 and a smallest |patch score - tau_I| of 7e-4. With lr=0 the
    # weights do not depend on the batches, grouped or not.
    assert a == b == c
    assert a["memory"][-1]["exemplars"] > 0
    ma, mb = memory_of(single, 1), memory_of(ddp, 1)
    assert sorted(ma) == sorted(mb)
    for c in ma:
        assert [e["index"] for e in ma[c]] == [e["index"] for e in mb[c]]
        for x, y in zip(ma[c], mb[c]):
            assert torch.equal(x["pixels"], y["pixels"]) and torch.equal(x["token_ids"], y["token_ids"])


def test_two_processes_train_as_one_at_the_same_effective_batch(tmp_path, demo_root):
    """emm trained for real (lr 1e-2) with batch_size 16: one process with micro-batches of 16, two with 8 each.
    The same global batches, the same per-sample dropout and augmentation: the same results; the trainable weights
    equal to rounding. Measured, largest |difference| of a trainable weight: 1.1e-6 after phase 0 and 1.3e-5 after
    phase 1 (the ranks' gradients are averaged by an all-reduce, in another order than one process sums them, and
    Adam enlarges the rounding of near-zero gradients); the bounds leave a factor of about 50. The numbers name the
    same run: devices is not a result key here."""
    common = ["lr=0.01", "batch_size=16", "per_gpu_batchsize=16", "max_epoch=2"]
    single = run(tmp_path, demo_root, *common, "devices=1", "exp_name=single")
    ddp = run(tmp_path, demo_root, *common, "devices=2", "strategy=ddp", "exp_name=ddp")
    a, b = (json.loads((d / "results.json").read_text()) for d in (single, ddp))
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["memory"] == b["memory"]
    assert a["results_config"] == b["results_config"]
    for phase, tolerance in ((0, 5e-5), (1, 1e-3)):
        wa, wb = (torch.load(d / "checkpoints" / f"phase_{phase}.pt", weights_only=False)["trainable"]
                  for d in (single, ddp))
        assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < tolerance, phase
    used = json.loads((ddp / "config.json").read_text())["provenance"][0]["resolved"]
    assert (used["world_size"], used["accumulation"], used["micro_batch"]) == (2, 1, 8)
