"""compile=True: the compiled backbone computes what the eager one does, in evaluation, masking and training.

One emm run of the demo at the tests' SMALL size, eager and compiled (SSF training, merged evaluation, the masking
pass, replay of masked exemplars), then the compiled backbones of that run against eager copies, on the entry
points the run compiled (so the checks add little compile time: the file takes about a minute once inductor's
on-disk cache holds the graphs, several on a cold, busy 2-core machine).
"""
import copy
import json

import pytest
import torch

from conftest import make_batch
from emmcil.data import ensure_demo
from emmcil.data.demo import DEMO_PER_CLASS
from emmcil.engine.driver import IncrementalRun
from emmcil.model import ViLT
from run_helpers import demo_config, one_thread

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{compile: the finished IncrementalRun}"""
    root = ensure_demo(tmp_path_factory.mktemp("demo"))
    out = {}
    with one_thread():
        for compile_ in (False, True):
            run = IncrementalRun(demo_config(root, tmp_path_factory.mktemp("runs"), "emm", compile=compile_))
            run.run()
            out[compile_] = run
    return out


def eager_copy(model: ViLT) -> ViLT:
    twin = copy.deepcopy(model)
    twin.compiled = None
    return twin


def test_compiled_demo_run_gives_the_eager_results(runs):
    eager, compiled = (json.loads((r.run_dir.path / "results.json").read_text()) for r in (runs[False], runs[True]))
    assert runs[True].module.backbone.compiled is not None and runs[False].module.backbone.compiled is None
    # float rounding may move a prediction or an exemplar's rank: allow one test sample per phase
    one_sample = [100 / (len(classes) * DEMO_PER_CLASS["test"]) for classes in eager["phase_classes"]]
    for row_e, row_c in zip(eager["accuracy_matrix"], compiled["accuracy_matrix"]):
        for a, b, tol in zip(row_e, row_c, one_sample):
            assert (a is None) == (b is None)
            if a is not None:
                assert abs(a - b) <= tol + 1e-9
    for mem_e, mem_c in zip(eager["memory"], compiled["memory"]):
        assert abs(mem_e["exemplars"] - mem_c["exemplars"]) <= 1


def test_compiled_forward_equals_eager(runs):
    module = runs[True].module
    mixed = make_batch(T=32, H=64, W=80, vocab=30000, sizes=[(64, 80), (48, 64), (64, 48)])
    other = make_batch(T=24, H=48, W=64, vocab=30000, seed=1, sizes=[(48, 64), (48, 48), (32, 64)])
    keep = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(0)) > 0.5
    merged = module.merged_backbone().eval()  # what evaluation and the masking pass ran
    eager = eager_copy(merged)
    with one_thread(), torch.inference_mode():
        for batch, kwargs in ((mixed, {}), (other, {}), (mixed, {"return_attention": [-1]}),
                              (mixed, {"patch_keep": keep, "pack": 2})):
            a, b = eager(*batch, **kwargs), merged(*batch, **kwargs)
            assert torch.allclose(a.pooled, b.pooled, atol=1e-5), kwargs
            assert torch.allclose(a.hidden, b.hidden, atol=1e-5), kwargs
            assert torch.equal(a.patch_index, b.patch_index)
            if kwargs.get("return_attention"):
                assert torch.allclose(a.attentions[-1], b.attentions[-1], atol=1e-5)

    # training (dropout 0.1): the compiled graph draws from the eager RNG in the same order, so the same gradients
    trained = module.backbone.train()
    grads = []
    with one_thread():
        for model in (eager_copy(trained), trained):
            model.zero_grad(set_to_none=True)  # the run's last step left its gradients
            torch.manual_seed(3)
            model(*mixed).pooled.square().sum().backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():  # 1e-5 of each gradient's scale (the square loss makes some of them ~20)
        assert (g - grads[1][name]).abs().max() <= 1e-5 * g.abs().max().clamp_min(1), name


def test_every_entry_point_traces_into_one_graph(tiny_cfg):
    """No graph break: the position embeddings of every grid at once, the token counts as unbacked sizes (what
    compiled_forward sets). Before: 6 graphs, breaks at the per-grid position loop and int(counts.max())."""
    torch.manual_seed(0)
    model = ViLT(dict(tiny_cfg, drop_rate=0.1))
    batch = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    keep = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(0)) > 0.5
    patches = torch.randn(3, 5, 3, 16, 16)
    stored = dict(patches=patches, patch_index=torch.tensor([[[0, 0], [0, 1], [1, 2], [3, 3], [2, 0]]] * 3),
                  grid_sizes=torch.tensor([[4, 6]] * 3))
    for train, args, kwargs in ((False, batch, {}), (True, batch, {}),
                                (False, batch, {"return_attention": [-1], "pooled_only": True}),
                                (False, batch, {"patch_keep": keep, "pack": 2, "pooled_only": True}),
                                (True, batch[:2], stored)):
        model.train(train)
        with torch._dynamo.config.patch(capture_scalar_outputs=True):
            explained = torch._dynamo.explain(ViLT.forward)(model, *args, **kwargs)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), (train, list(kwargs))
