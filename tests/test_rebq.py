"""RebQ on our ViLT: CODA-P pools, deep memory tokens, reconstruction, per-task gradients, frozen old logits."""
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_CFG, make_batch
from emmcil.data.missing import IMAGE_MISSING, NONE, TEXT_MISSING
from emmcil.data.tokenizer import CLS_ID, SEP_ID
from emmcil.engine.module import IncrementalModule
from emmcil.methods.rebq import RebQ, PromptPool, drop_image, drop_text, orthonormal_rows, reconstruction_loss
from emmcil.model import ViLT
from run_helpers import one_thread, resolve, settings

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


def rebq_module(reinit=True, phases=2, classes=4, **updates):
    """A tiny IncrementalModule with RebQ (2 layers, hidden 32; 4 components a task)."""
    torch.manual_seed(0)
    cfg = dict(TINY_CFG, tuning="frozen", ssf=False, num_classes=classes, num_phases=phases, **RebQ.config)
    cfg.update({"rebq_pool_size": 4 * phases, "rebq_layers": 2, "rebq_prompt_length": 4, "rebq_reinit": reinit,
                **updates})
    s = settings({**resolve("demo", "rebq"), **cfg})
    method = RebQ(s)
    return IncrementalModule(method, s), method


def batch_of(types, labels, seed=0):
    text_ids, text_masks, images, pixel_masks = make_batch(B=len(types), seed=seed)
    return {"text_ids": text_ids, "text_masks": text_masks, "images": images, "pixel_masks": pixel_masks,
            "labels": torch.tensor(labels), "missing_types": torch.tensor(types)}


class _Ctx:
    def __init__(self, module, phase):
        self.module, self.phase = module, phase


def start_phase(module, method, phase, n_classes=2):
    """What the driver does at the start of a phase: grow the classifier (-> set_trainable), before_phase."""
    module.add_classes(n_classes)
    method.before_phase(_Ctx(module, phase))


def test_pool_weighting_is_coda_prompts_formula():
    torch.manual_seed(0)
    pool = PromptPool(num_tasks=3, per_task=4, length=6, layers=2, dim=16)
    pool.init_task(1)
    q = torch.randn(5, 16)
    got = pool(q, 1)  # tasks 0 and 1: 8 components
    assert got.shape == (2, 5, 6, 16)
    for layer in range(2):  # the released PromptPool.forward (CODA-P), with F.normalize
        K = torch.cat([pool.tasks[s].keys[layer] for s in range(2)])
        A = torch.cat([pool.tasks[s].attention[layer] for s in range(2)])
        P = torch.cat([pool.tasks[s].prompts[layer] for s in range(2)])
        a_q = torch.einsum("bd,kd->bkd", q, A)
        w = torch.einsum("bkd,kd->bk", F.normalize(a_q, dim=2), F.normalize(K, dim=1))
        assert torch.allclose(got[layer], torch.einsum("bk,kld->bld", w, P), atol=1e-6)
    # task 2's components are still zero: adding them changes nothing
    assert torch.allclose(pool(q, 2), got, atol=1e-7)


def test_gram_schmidt_init_is_orthonormal_to_earlier_tasks():
    torch.manual_seed(0)
    pool = PromptPool(num_tasks=3, per_task=4, length=2, layers=1, dim=16)
    assert all(float(getattr(pool.tasks[s], n).detach().abs().sum()) == 0 for s in (1, 2)
               for n in ("prompts", "keys", "attention"))  # allocated whole, only task 0 initialised
    pool.init_task(1)
    keys = torch.cat([pool.tasks[0].keys[0], pool.tasks[1].keys[0]])
    assert torch.allclose(keys @ keys.T, torch.eye(8), atol=1e-5)
    prompts = torch.cat([pool.tasks[0].prompts[0].flatten(1), pool.tasks[1].prompts[0].flatten(1)])
    assert torch.allclose(prompts @ prompts.T, torch.eye(8), atol=1e-5)
    rows = orthonormal_rows(3, torch.eye(4)[:3])  # only one direction left: then plain random unit rows
    assert torch.allclose(rows.norm(dim=1), torch.ones(3), atol=1e-6) and rows[0, :3].abs().max() < 1e-6


def test_deep_tokens_hook():
    torch.manual_seed(0)
    model = ViLT(dict(TINY_CFG)).eval()
    text_ids, text_masks, images, pixel_masks = make_batch(B=2)
    E = torch.randn(2, 3, 32)
    shallow = model(text_ids, text_masks, images, pixel_masks, extra_tokens=E)
    same = model(text_ids, text_masks, images, pixel_masks, deep_tokens=[E, None])
    # bitwise: deep_tokens[0] takes the extra_tokens path itself (same ops, same shapes); layer 1 has no entry
    assert torch.equal(shallow.hidden, same.hidden) and same.num_extra == 3
    deep = model(text_ids, text_masks, images, pixel_masks, deep_tokens=[E, torch.randn(2, 3, 32)])
    assert not torch.allclose(deep.hidden[:, 0], shallow.hidden[:, 0])
    with pytest.raises(ValueError, match="give one of them"):
        model(text_ids, text_masks, images, pixel_masks, extra_tokens=E, deep_tokens=[E, None])
    with pytest.raises(ValueError, match="deep_tokens\\[1\\] has 2 tokens"):
        model(text_ids, text_masks, images, pixel_masks, deep_tokens=[E, E[:, :2]])


def test_pools_grow_per_task_and_only_the_current_tasks_components_get_gradient():
    module, method = rebq_module(reinit=True)
    start_phase(module, method, 0)
    net = module.method_net
    used = lambda t: sum(c.keys.shape[1] for c in net.memory.tasks[:t + 1])  # noqa: E731 (components of 0..t)
    assert method.current_phase(module) == 0 and used(0) == 4
    start_phase(module, method, 1)
    assert method.current_phase(module) == 1 and used(1) == 8
    assert not module.backbone.pooler.dense.weight.requires_grad  # rebq_pooler=False: not in the forward pass
    module.train()
    batch = batch_of([NONE, TEXT_MISSING, IMAGE_MISSING, NONE], [2, 3, 2, 3])
    out = module.encode(batch)
    logits = module.classifier(out.pooled)
    method.training_loss(module, batch, out, logits).backward()
    for pool in net.pools():
        for name in ("prompts", "keys", "attention"):
            assert getattr(pool.tasks[0], name).grad is None          # the previous task's: frozen
            assert getattr(pool.tasks[1], name).grad.abs().sum() > 0  # the current task's learn
    assert module.classifier.weight.grad[:2].abs().sum() == 0        # old classes' logits are frozen
    assert module.classifier.weight.grad[2:].abs().sum() > 0
    assert all(p.grad is None for n, p in module.backbone.named_parameters())


def test_released_default_leaves_new_components_at_zero_with_zero_gradient():
    """rebq_reinit=False (the released REINIT): task 1's components are zero, weigh 0 and get exactly 0."""
    module, method = rebq_module(reinit=False)
    start_phase(module, method, 0)
    start_phase(module, method, 1)
    module.train()
    batch = batch_of([NONE, TEXT_MISSING, IMAGE_MISSING], [2, 3, 2])
    out = module.encode(batch)
    method.training_loss(module, batch, out, module.classifier(out.pooled)).backward()
    for pool in module.method_net.pools():
        for name in ("prompts", "keys", "attention"):
            p = getattr(pool.tasks[1], name)
            assert p.requires_grad and float(p.detach().abs().sum()) == 0 and float(p.grad.abs().sum()) == 0
            assert getattr(pool.tasks[0], name).grad is None
    assert module.classifier.weight.grad[2:].abs().sum() > 0  # only the classifier learns


def test_reconstruction_loss_function():
    a = torch.randn(3, 8, requires_grad=True)
    b = torch.randn(3, 8, requires_grad=True)
    assert reconstruction_loss(a, a.detach().clone()) == 0                # nothing was lost
    loss = reconstruction_loss(a, b)
    assert loss > 0 and torch.allclose(loss, ((a - b) ** 2).mean(1).mean())  # mean over copies of per-copy MSE
    loss.backward()
    assert b.grad is None and a.grad.abs().sum() > 0                       # the complete original is the target
    assert reconstruction_loss(a[:0], b[:0]) == 0


def test_copies_and_reconstruction_in_a_batch():
    text_ids, text_masks, images, pixel_masks = make_batch(B=2, sizes=[(64, 64), (32, 96)])
    ids, masks = drop_text(text_ids, text_masks)
    assert ids[:, :2].tolist() == [[CLS_ID, SEP_ID]] * 2 and ids[:, 2:].eq(0).all() and masks.sum(1).tolist() == [2, 2]
    white = drop_image(images, pixel_masks)
    real = pixel_masks[:, None].expand_as(white)
    assert white[real].eq(1).all() and white[~real].eq(0).all()

    module, method = rebq_module()
    start_phase(module, method, 0)
    module.train()
    only_missing = module.encode(batch_of([TEXT_MISSING, IMAGE_MISSING], [0, 1]))
    assert only_missing.num_copies == 0 and only_missing.reconstruction_loss == 0   # nothing complete to copy
    mixed = module.encode(batch_of([NONE, TEXT_MISSING, NONE], [0, 1, 1]))
    assert mixed.num_copies == 2 and mixed.reconstruction_loss > 0
    assert mixed.pooled.shape == (3, 32)                                           # copies are not classified
    module.eval()
    with torch.no_grad():
        evaluated = module.encode(batch_of([NONE, TEXT_MISSING, NONE], [0, 1, 1]))
    assert evaluated.num_copies == 0 and evaluated.reconstruction_loss is None


def test_missing_modalities_are_queried_through_the_memory_pool():
    """A sample missing a modality queries that modality's pool with its reconstruction (the memory-prompted pass),
    the present modality and complete samples with the frozen pass's [CLS] tokens."""
    module, method = rebq_module()
    start_phase(module, method, 0)
    module.eval()
    batch = batch_of([NONE, TEXT_MISSING, IMAGE_MISSING], [0, 1, 1])
    net = module.method_net
    with torch.no_grad():
        frozen = module.backbone(batch["text_ids"], batch["text_masks"], batch["images"], batch["pixel_masks"])
        text_cls, image_cls = frozen.hidden[:, 0], frozen.hidden[:, frozen.text_len]
        before = module.encode(batch)
        net.memory.tasks[0].prompts.copy_(torch.randn_like(net.memory.tasks[0].prompts))
        after = module.encode(batch)
    for out in (before, after):
        assert torch.allclose(out.text_query[[0, 2]], text_cls[[0, 2]], atol=1e-6)
        assert torch.allclose(out.image_query[[0, 1]], image_cls[[0, 1]], atol=1e-6)
        assert not torch.allclose(out.text_query[1], text_cls[1], atol=1e-3)
        assert not torch.allclose(out.image_query[2], image_cls[2], atol=1e-3)
    assert not torch.allclose(before.text_query[1], after.text_query[1], atol=1e-3)
    assert not torch.allclose(before.image_query[2], after.image_query[2], atol=1e-3)
    assert torch.allclose(before.pooled[0], after.pooled[0], atol=1e-6)  # a complete sample: no memory pool


def test_training_loss_supervises_only_the_current_classes():
    module, method = rebq_module()
    start_phase(module, method, 0)
    start_phase(module, method, 1)
    logits = torch.randn(4, 4, requires_grad=True)
    batch = {"labels": torch.tensor([2, 3, 3, 2])}
    out = type("O", (), {"reconstruction_loss": torch.tensor(2.0)})()
    loss = method.training_loss(module, batch, out, logits)
    expected = F.cross_entropy(logits[:, 2:], batch["labels"] - 2) + 0.01 * 2.0
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert logits.grad[:, :2].abs().sum() == 0


def test_config_errors():
    with pytest.raises(ValueError, match="even"):
        rebq_module(rebq_prompt_length=3)
    with pytest.raises(ValueError, match="no component per task"):
        cfg = dict(RebQ.config, tuning="frozen", num_classes=10, num_phases=5, rebq_pool_size=4)
        RebQ(settings({**resolve("demo", "rebq"), **cfg}))


def test_rebq_on_a_backbone_no_checkpoint_initialised_warns_at_its_start(tmp_path):
    """RebQ's prompts read a frozen backbone: on a random one the run stays at chance, so it says so first."""
    from emmcil.data import ensure_demo
    from emmcil.engine.driver import UntrainedBackboneWarning, run_experiment, untrained_backbone_note
    from run_helpers import demo_config

    cfg = demo_config(ensure_demo(tmp_path / "demo"), tmp_path / "runs", "rebq", limit_train_batches=1,
                      stop_after_phase=0)
    assert (cfg["tuning"], cfg["load_path"]) == ("frozen", "")
    with pytest.warns(UntrainedBackboneWarning, match=r"rebq trains its own parameters and the head on a frozen "
                                                      r"backbone .* no checkpoint initialised it .* load_path="):
        run_experiment(cfg)
    # pretrained weights, or a backbone trained whole (the demo's tuning=full): nothing to say
    assert untrained_backbone_note(settings(cfg, load_path="checkpoints/vilt_200k_mlm_itm.ckpt")) is None
    assert untrained_backbone_note(settings(cfg, tuning="full")) is None
    # SSF alone cannot adapt a random backbone either (the paper's setting needs the checkpoint)
    emm = resolve("demo", "emm", tuning="ssf", load_path="")
    assert "tunes only SSF's scales and shifts" in untrained_backbone_note(settings(emm))
