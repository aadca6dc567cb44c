"""The method contract's model hooks: a method's own network, its trainability and checkpointing, encode."""
import torch

from conftest import TINY_CFG, make_batch
from emmcil.engine.module import IncrementalModule
from emmcil.methods import Method
from run_helpers import settings


class PromptMethod(Method):
    """A toy prompt method: one prompt vector appended as an extra token; frozen once ``frozen`` is set."""

    name = "toy_prompt"

    def __init__(self, settings):
        super().__init__(settings)
        self.frozen = False

    def build_net(self, backbone_cfg):
        net = torch.nn.Module()
        net.prompt = torch.nn.Parameter(torch.randn(1, 1, backbone_cfg.hidden_size))
        return net

    def set_trainable(self, module):
        module.method_net.prompt.requires_grad_(not self.frozen)

    def encode(self, module, batch, return_attention=False):
        B = batch["text_ids"].shape[0]
        return module.backbone(batch["text_ids"], batch["text_masks"], batch["images"], batch["pixel_masks"],
                               extra_tokens=module.method_net.prompt.expand(B, -1, -1),
                               return_attention=return_attention)


def module_and_batch(tuning="frozen"):
    torch.manual_seed(0)
    s = settings(**TINY_CFG, tuning=tuning)
    method = PromptMethod(s)
    module = IncrementalModule(method, s)
    text_ids, text_masks, images, pixel_masks = make_batch()
    batch = {"text_ids": text_ids, "text_masks": text_masks, "images": images, "pixel_masks": pixel_masks,
             "labels": torch.tensor([0, 1, 1])}
    return module, method, batch


def test_method_net_trains_then_is_frozen_but_still_checkpointed():
    module, method, batch = module_and_batch()
    n = module.add_classes(2)
    assert module.method_net.prompt.requires_grad
    assert n == 32 + 32 * 32 + 32 + 2 * 32 + 2  # prompt + pooler + classifier
    out = module.encode(batch)
    assert out.num_extra == 1
    torch.nn.functional.cross_entropy(module.classifier(out.pooled), batch["labels"]).backward()
    assert module.method_net.prompt.grad is not None
    assert module.backbone.transformer.blocks[0].attn.qkv.weight.grad is None
    checksum = module.frozen_checksum()
    method.frozen = True
    module.add_classes(1)
    assert not module.method_net.prompt.requires_grad
    state = module.trainable_state_dict()
    assert "method_net.prompt" in state and any(k.startswith("classifier.") for k in state)
    assert module.frozen_checksum() == checksum  # freezing a method parameter does not touch the backbone's print


def test_checkpoint_restores_a_frozen_method_parameter():
    module, method, _ = module_and_batch()
    module.add_classes(2)
    method.frozen = True
    module.apply_freeze_policy()
    state = module.trainable_state_dict()
    other, other_method, _ = module_and_batch()
    other.add_classes(2)
    other_method.frozen = True
    other.apply_freeze_policy()
    with torch.no_grad():
        other.method_net.prompt.zero_()
    other.load_state_dict(state, strict=False)
    assert torch.equal(other.method_net.prompt, module.method_net.prompt)


def test_a_method_takes_the_run_settings_of_its_own_settings_class():
    """A method is built from the run's typed settings only; settings made for another method (their ``method``
    part another class) are a TypeError naming the class the method needs."""
    import pytest

    from emmcil.methods import get_method
    from run_helpers import resolve

    emm = settings(resolve("demo", "emm"))
    method = get_method("emm")(emm)
    assert method.settings is emm and method.own is emm.method and method.own.tau_image == emm.method.tau_image
    with pytest.raises(TypeError, match="L2pSettings"):
        get_method("l2p")(emm)
    with pytest.raises(TypeError, match="MethodSettings"):
        Method({"tau_image": 0.5})  # the flat config is not what a method takes
