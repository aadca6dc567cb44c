"""The paper's other baselines on ViLT: L2P, DualPrompt, EASE (exemplar-free) and SSF + CIM (compressed exemplars)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_CFG, make_batch
from emmcil.data import ensure_demo
from emmcil.engine.driver import run_experiment
from emmcil.engine.rundir import RunDir
from emmcil.memory.exemplar import CimExemplar, exemplar_from_state
from emmcil.engine.module import IncrementalModule
from emmcil.methods import get_method, method_config_defaults
from emmcil.methods.exemplar_free import select_by_keys
from emmcil.methods.l2p import image_cls_position
from run_helpers import changed, one_thread, resolve, settings
from run_helpers import demo_config as run_config

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
# the 1-layer SMALL model has no room for DualPrompt's G- and E-layers: two layers, G at 0 and E at 1
EXTRA = {"dualprompt": dict(num_layers=2, dualprompt_g_layers=[0], dualprompt_e_layers=[1])}
METHODS = ("l2p", "dualprompt", "ease", "cim", "replay")


def demo_config(root, logs, method, **updates) -> dict:
    return run_config(root, logs, method, **{**EXTRA.get(method, {}), **updates})


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    root = ensure_demo(tmp_path_factory.mktemp("demo"))
    logs = tmp_path_factory.mktemp("runs")
    with one_thread():
        yield {m: run_experiment(demo_config(root, logs, m)) for m in METHODS}


def results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_every_baseline_runs_two_phases_to_a_results_file(demo_runs):
    for method in ("l2p", "dualprompt", "ease", "cim"):
        res = results(demo_runs[method])
        assert res["finished"] and len(res["accuracy_per_phase"]) == 2, method
        cfg = json.loads((demo_runs[method] / "config.json").read_text())
        if method == "cim":
            assert res["memory"][-1]["exemplars"] > 0  # tuning: the demo's "full" (random backbone), else SSF
        else:  # exemplar-free: frozen backbone without SSF modules, nothing stored
            assert (cfg["tuning"], cfg["ssf"], cfg["drop_rate"]) == ("frozen", False, 0.0), method
            assert res["memory"] == [None, None], method


def test_cim_saves_its_exemplars_as_stored_and_its_cam_for_the_memory_browser(demo_runs):
    state = RunDir(demo_runs["cim"]).load_checkpoint(1)
    stored = {(e.label, e.index): e for v in state["method"]["memory"]["classes"].values()
              for e in map(exemplar_from_state, v)}
    saved = {}
    for manifest in (demo_runs["cim"] / "memory").glob("phase_*/memory.json"):
        saved.update({(r["label"], r["index"]): (r, manifest.parent) for r in json.loads(manifest.read_text())[
            "exemplars"]})
    assert saved.keys() == stored.keys()
    for key, ex in stored.items():
        rec, folder = saved[key]
        with Image.open(folder / rec["stored_image"]) as im:  # the background as stored, blown up, the box sharp
            assert torch.equal(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1), ex.image_uint8())
        cam = torch.tensor(rec["attention"])
        assert cam.shape == tuple(int(v) for v in ex.grid) and 0 <= cam.min() and cam.max() == 1  # min-max CAM
        assert rec["cost"] == ex.cost(rec["unit"]) and (folder / rec["input_image"]).is_file()


def test_cim_stays_within_the_budget_and_stores_more_than_replay(demo_runs):
    cim, replay = results(demo_runs["cim"])["memory"][-1], results(demo_runs["replay"])["memory"][-1]
    assert cim["class_budget"] == replay["class_budget"] == 5.0
    for phase_memory in results(demo_runs["cim"])["memory"]:
        for c, cost in phase_memory["cost_per_class"].items():
            assert cost <= 5.0, c
    assert cim["exemplars"] > replay["exemplars"]
    state = torch.load(demo_runs["cim"] / "checkpoints" / "phase_1.pt", weights_only=True)
    stored = [exemplar_from_state(e) for v in state["method"]["memory"]["classes"].values() for e in v]
    assert stored and all(isinstance(e, CimExemplar) for e in stored)
    assert sum(e.nbytes for e in stored) == cim["bytes"]
    assert sum(e.token_share for e in stored) == pytest.approx(cim["cost"])      # the default unit, tokens
    # each keeps a box of patches at full resolution, the rest at a quarter of its area (CIM-CIL's ratio 4)
    for e in stored:
        assert 0 < e.num_full_res_patches <= e.num_patches and e.compress_ratio == 4.0
        rows = sorted({int(r) for r, _ in e.fg_coords})
        cols = sorted({int(c) for _, c in e.fg_coords})
        assert e.num_full_res_patches == len(rows) * len(cols)  # a rectangle
        assert e.token_share == e.image_rate == e.patch_share + (1 - e.patch_share) / 4   # CIM-CIL's rate
        assert e.byte_share == pytest.approx(e.image_rate, abs=0.01)
    assert cim["kept_patch_share"] < 1 and replay["kept_patch_share"] == 1.0


def test_ease_builds_prototypes_for_old_classes_in_new_subspaces(demo_runs):
    state = torch.load(demo_runs["ease"] / "checkpoints" / "phase_1.pt", weights_only=True)
    protos = state["trainable"]["method_net.prototypes"]          # (classes, phases, C)
    assert protos.shape[:2] == (10, 2)
    assert (protos.norm(dim=-1) > 0).all()                        # classes 0-4 in subspace 1 were synthesised
    assert not torch.equal(protos[:5, 1], protos[:5, 0])


def test_ease_resumes_to_the_same_numbers(demo_runs, tmp_path_factory):
    root = ensure_demo(tmp_path_factory.mktemp("demo2"))
    logs = tmp_path_factory.mktemp("runs2")
    with one_thread():
        run_dir = run_experiment(demo_config(root, logs, "ease", stop_after_phase=0))
        assert results(run_dir)["completed_phases"] == 1
        run_experiment(demo_config(root, logs, "ease"))
    assert results(run_dir)["accuracy_matrix"] == results(demo_runs["ease"])["accuracy_matrix"]


# ---------------------------------------------------------------- parameters, selection, freezing (no driver)
def method_module(name: str, **updates):
    cls = get_method(name)
    cfg = dict(method_config_defaults(), **TINY_CFG, num_classes=6, num_phases=3, tuning="ssf", ssf=True)
    cfg.update(EXTRA.get(name, {}))
    cfg.update(cls.named_config)
    cfg.update(updates)
    torch.manual_seed(0)
    s = settings({**resolve("demo", name, **EXTRA.get(name, {})), **cfg})
    method = cls(s)
    return IncrementalModule(method, s), method


def batch(labels=(0, 1, 1)):
    text_ids, text_masks, images, pixel_masks = make_batch()
    return {"text_ids": text_ids, "text_masks": text_masks, "images": images, "pixel_masks": pixel_masks,
            "labels": torch.tensor(labels)}


def trainable(module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_trainable_parameters_are_the_methods_own_and_the_head():
    module, _ = method_module("l2p")
    module.add_classes(2)
    assert trainable(module) == {"method_net.prompts", "method_net.keys", "classifier.weight", "classifier.bias"}

    module, _ = method_module("dualprompt")
    module.add_classes(2)
    head = {"classifier.weight", "classifier.bias"}
    assert trainable(module) == {"method_net.g_prompts", "method_net.e_prompts.0", "method_net.e_keys.0"} | head
    module.add_classes(2)
    assert trainable(module) == {"method_net.g_prompts", "method_net.e_prompts.1", "method_net.e_keys.1"} | head

    module, _ = method_module("ease")
    module.add_classes(2)
    module.add_classes(2)
    names = trainable(module)
    proxy = {"method_net.proxy_weights.1", "method_net.proxy_sigmas.1"}  # phase 1's own proxy head only
    assert proxy <= names
    adapters = names - proxy
    assert adapters and all(n.startswith("method_net.adapters.1.") for n in adapters)
    assert len(adapters) == TINY_CFG["num_layers"] * 4                 # down/up weight and bias per layer

    module, _ = method_module("cim")                                    # SSF + CIM: SSF, pooler and classifier
    module.add_classes(2)
    assert all(".ssf" in n or n.startswith(("backbone.pooler.", "classifier.")) for n in trainable(module))
    assert not hasattr(module, "method_net")


def test_key_query_selection_picks_the_matching_prompts():
    keys = torch.randn(10, 16)
    query = torch.stack([keys[3], keys[7] * 2.0, keys[7] + 0.01 * torch.randn(16)])  # cosine: scale-free
    assert select_by_keys(query, keys, 1, batchwise=False)[:, 0].tolist() == [3, 7, 7]
    assert select_by_keys(query, keys, 1, batchwise=True)[:, 0].tolist() == [7, 7, 7]  # the batch's majority
    query2 = torch.stack([keys[2] + keys[5], keys[5] + keys[2] * 0.9])
    assert [sorted(r) for r in select_by_keys(query2, keys, 2, batchwise=False).tolist()] == [[2, 5], [2, 5]]


def test_l2p_prompts_the_batch_with_the_keys_that_match_its_query():
    module, method = method_module("l2p", l2p_top_k=2, l2p_batchwise=False)
    module.add_classes(2)
    b = batch()
    query = method.query(module, b)
    with torch.no_grad():  # keys 4 and 8 become the queries of samples 0 and 2 (and close to their neighbours')
        module.method_net.keys.normal_()
        module.method_net.keys[4] = query[0] * 3
        module.method_net.keys[8] = query[2]
    out = module.encode(b)
    assert out.prompt_idx[0, 0] == 4 and out.prompt_idx[2, 0] == 8
    assert out.num_extra == 2 * method.own.l2p_length
    # the prompted pass really used those prompts: zeroing prompt 4 changes sample 0's feature
    with torch.no_grad():
        module.method_net.prompts[4] = 0
    assert not torch.allclose(module.encode(b).pooled[0], out.pooled[0])
    # training: old classes masked, loss includes the pull constraint on the chosen keys
    module.add_classes(2)
    module.train()
    out = module.encode(b := batch(labels=(2, 3, 3)))
    logits = module.logits(out)
    assert torch.isinf(logits[:, :2]).all() and torch.isfinite(logits[:, 2:]).all()
    method.training_loss(module, b, out, logits).backward()
    assert module.method_net.keys.grad[out.prompt_idx.unique()].abs().sum() > 0
    assert module.backbone.pooler.dense.weight.grad is None


def test_l2p_head_and_prompt_positions_follow_pilot():
    module, method = method_module("l2p", l2p_batchwise=False)
    module.add_classes(2)
    module.eval()
    b = batch()
    out = module.encode(b)
    E = out.num_extra
    # PILOT head_type "prompt": the mean of the prompt tokens' final-normed outputs, no pooler in between
    assert torch.allclose(out.pooled, out.hidden[:, -E:].mean(1), atol=1e-6)
    pooler = get_method("l2p")(changed(method.settings, l2p_head="pooler"))
    module.method = pooler
    assert torch.allclose(module.encode(b).pooled, module.backbone.pooler(out.hidden), atol=1e-6)
    # PILOT gives the prompt slots the [CLS]'s position embedding: what ViLT adds to its image [CLS] token
    backbone, C = module.backbone, out.hidden.shape[-1]
    cls_input = backbone.transformer.prepend_cls(torch.zeros(1, 0, C), torch.zeros(1, 0, dtype=torch.bool))[0][0, 0]
    cls_input = cls_input + backbone.token_type_embeddings.weight[1]
    assert torch.allclose(backbone.transformer.cls_token[0, 0] + image_cls_position(backbone), cls_input)
    # ... added to every prompt token: "none" with the prompts shifted by it gives the same pass
    module.method = get_method("l2p")(changed(method.settings, l2p_prompt_position="none"))
    assert not torch.allclose(module.encode(b).hidden, out.hidden, atol=1e-4)
    with torch.no_grad():
        module.method_net.prompts += image_cls_position(backbone)
    assert torch.allclose(module.encode(b).hidden, out.hidden, atol=1e-5)


def test_dualprompt_head_reads_the_final_normed_text_cls():
    module, method = method_module("dualprompt")
    module.add_classes(2)
    module.eval()
    out = module.encode(batch())
    assert torch.allclose(out.pooled, out.hidden[:, 0])                  # PILOT head_type "token"
    module.method = get_method("dualprompt")(changed(method.settings, dualprompt_head="pooler"))
    assert torch.allclose(module.encode(batch()).pooled, module.backbone.pooler(out.hidden), atol=1e-6)


def test_dualprompt_values_the_model_cannot_take_are_refused_when_the_config_is_resolved():
    """Layers the model lacks (the default [2, 3, 4] on the demo's 2 layers), or fewer E-prompts than phases: a
    one-line config error before anything runs, not a failure when the network is built."""
    from sacred.utils import ConfigError

    with pytest.raises(ConfigError, match=r"layers \[2, 3, 4\] do not exist in a 2-layer model"):
        resolve("demo", "dualprompt")
    layers = dict(dualprompt_g_layers=[0], dualprompt_e_layers=[1])
    with pytest.raises(ConfigError, match="dualprompt_pool_size=2 is smaller than num_phases=5"):
        resolve("demo", "dualprompt", dualprompt_pool_size=2, **layers)
    with pytest.raises(ConfigError, match="dualprompt_e_layers=\\[\\]: DualPrompt needs E-prompts"):
        resolve("demo", "dualprompt", dualprompt_g_layers=[0], dualprompt_e_layers=[])
    ok = resolve("demo", "dualprompt", **layers)
    with pytest.raises(ValueError, match="do not exist in a 2-layer model"):  # settings built elsewhere
        get_method("dualprompt")(changed(settings(ok), dualprompt_e_layers=[1, 2]))


def test_dualprompt_earlier_expert_prompts_get_no_gradient_later():
    module, method = method_module("dualprompt")
    module.add_classes(2)
    module.add_classes(2)                                              # phase 1
    module.train()
    out = module.encode(b := batch(labels=(2, 3, 3)))
    assert out.prompt_idx.tolist() == [1, 1, 1]                        # the current phase's E-prompt in training
    method.training_loss(module, b, out, module.logits(out)).backward()
    net = module.method_net
    assert net.e_prompts[0].grad is None and net.e_keys[0].grad is None
    assert net.e_prompts[1].grad.abs().sum() > 0 and net.e_keys[1].grad.abs().sum() > 0
    assert net.g_prompts.grad.abs().sum() > 0
    # at test time the query picks among every key of the pool (PILOT), or only the seen phases' keys
    module.eval()
    query = method.query(module, b)
    with torch.no_grad():                                             # cosine with the queries: key 0 about 0,
        net.e_keys[0].normal_()                                       # key 1 -1, key 2 (an unseen phase's) 1
        net.e_keys[1].copy_(-query[0])
        net.e_keys[2].copy_(query[0])
    assert module.encode(b).prompt_idx.tolist() == [2, 2, 2]
    seen = get_method("dualprompt")(changed(method.settings, dualprompt_test_keys="seen"))
    module.method = seen
    assert module.encode(b).prompt_idx.tolist() == [0, 0, 0]


def test_ease_logits_follow_the_reweighted_prototype_classifier():
    module, method = method_module("ease")
    module.add_classes(2)
    module.add_classes(2)                                              # phase 1: subspaces 0 and 1
    torch.manual_seed(1)
    with torch.no_grad():
        module.method_net.prototypes.normal_()
    module.eval()
    b = batch()
    feats = method.subspace_features(module, b, [0, 1])[0]
    per_pass = get_method("ease")(changed(method.settings, ease_adapters_per_pass=1))
    assert torch.allclose(per_pass.subspace_features(module, b, [0, 1])[0], feats, atol=1e-5)
    logits = module.logits(module.encode(b))
    cos = torch.nn.functional.cosine_similarity(feats[:, None], module.method_net.prototypes[None, :4, :2], dim=-1)
    alpha = method.own.ease_alpha
    expected = torch.stack([cos[:, :2, 0] + alpha * cos[:, :2, 1], cos[:, 2:, 1] + alpha * cos[:, 2:, 0]], 1)
    assert torch.allclose(logits, expected.flatten(1), atol=1e-5)
