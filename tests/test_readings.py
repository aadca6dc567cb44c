"""Every plausible reading of the method as a key (issue 22): the image [CLS] as the masks' source, black-filled
replay, augmented copies beside the originals, the MLP head, CIM as CIM-CIL runs it (its fill loop, its CAM, its
random BbxBlur of new-class training images), and what becomes of runs made before the token unit."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_batch
from emmcil.data.transforms import normalize_uint8
from emmcil.engine.driver import run_experiment
from emmcil.engine.rundir import ConfigMismatchError
from emmcil.memory.augment import AugmentedReplay
from emmcil.memory.exemplar import Exemplar
from emmcil.memory.masking import MaskingConfig, compute_masks, masking_step, normalise
from emmcil.methods import cim as cim_module
from emmcil.methods.cim import CIM, bbx_blur, box_bounds, cam_step
from emmcil.model import ViLT
from emmcil.model.heads import IncrementalClassifier
from run_helpers import demo_config, one_thread, resolve, settings
from test_masking import ROWS, hand_output

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
P = 16


def make_item(h=4, w=5, label=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = normalize_uint8(torch.randint(0, 256, (3, h * P, w * P), generator=g, dtype=torch.uint8))
    ids = torch.zeros(12, dtype=torch.long)
    ids[:8] = torch.tensor([101, 11, 12, 13, 14, 15, 16, 102])
    return {"image": image, "text_ids": ids, "text_masks": (ids > 0).long(), "label": label, "index": seed,
            "image_id": f"s{seed}"}


# ---------------------------------------------------------------------------------------------- emm's readings
def test_the_image_cls_token_can_be_the_source_of_the_image_mask():
    T = 5
    rows = {**ROWS, T: [0.0] * (T + 1) + [0.0, 0.2, 0.9, 0.1]}      # the image [CLS] looks elsewhere
    out, ids = hand_output(rows)
    text = compute_masks(out, ids, MaskingConfig(norm="minmax", tau_image=0.5, tau_text=0.5))
    image = compute_masks(out, ids, MaskingConfig(norm="minmax", tau_image=0.5, tau_text=0.5, cls_token="image"))
    assert text.patch_keep.tolist() == [[True, False, False, True]]
    assert image.patch_keep.tolist() == [[False, False, True, False]]
    assert torch.allclose(image.image_scores, normalise(torch.tensor([[0.0, 0.2, 0.9, 0.1]]),
                                                       torch.ones(1, 4, dtype=torch.bool), "minmax"))
    with pytest.raises(ValueError, match="mask_cls_token='pooled'"):
        MaskingConfig(cls_token="pooled")


def test_black_replay_ranks_by_the_features_of_the_black_filled_image(tiny_cfg):
    """The masking pass's f(x~) is that of the masked sample as it will be replayed: for ``black`` the image with
    its discarded patches black, every patch fed, the kept words."""
    torch.manual_seed(0)
    model = ViLT(dict(tiny_cfg)).eval()
    ids, masks, images, pixel_masks = make_batch(B=2, H=64, W=80, sizes=[(64, 80), (48, 64)])
    ids[:, 0] = 101                                                            # [CLS]: always kept
    batch = {"text_ids": ids, "text_masks": masks, "images": images, "pixel_masks": pixel_masks}
    cfg = MaskingConfig()
    patches = masking_step(model, batch, cfg, (5, 5))
    black = masking_step(model, batch, cfg, (5, 5), masked_replay="black")
    assert torch.equal(patches["patch_keep"], black["patch_keep"]) and torch.equal(patches["features"],
                                                                                    black["features"])
    keep = black["patch_keep"][1, :3, :4].repeat_interleave(16, 0).repeat_interleave(16, 1)   # image 1: 48 x 64
    filled = images[1:2].clone()
    filled[0, :, :48, :64][:, ~keep] = -1.0
    expected = model(ids[1:2], black["text_keep"][1:2].long(), filled, pixel_masks[1:2]).pooled
    assert torch.allclose(black["masked_features"][1:2], expected, atol=1e-5)
    assert not torch.allclose(black["masked_features"], patches["masked_features"], atol=1e-4)


def test_augmented_copies_beside_the_originals():
    exemplars = []
    for k in range(4):
        keep = torch.zeros(4, 5, dtype=torch.bool)
        keep[k % 4, :] = True
        exemplars.append(Exemplar.from_item(make_item(label=k % 2, seed=k), P, patch_keep=keep))
    beside = AugmentedReplay(exemplars, 12, 1.0, 1.0, mode="beside")
    in_place = AugmentedReplay(exemplars, 12, 1.0, 1.0)
    assert len(beside) == 8 and len(in_place) == 4
    assert beside.labels.tolist() == [0, 1, 0, 1] * 2
    torch.manual_seed(0)
    for k, ex in enumerate(exemplars):                                         # the first half: as stored
        plain, copy = beside[k], beside[k + 4]
        assert torch.equal(plain["image"], ex.to_item(12)["image"]) and torch.equal(plain["patch_keep"],
                                                                                   ex.to_item(12)["patch_keep"])
        assert copy["patch_keep"].sum() > plain["patch_keep"].sum()            # merged with its class mate's
        assert copy["label"] == plain["label"]
    with pytest.raises(ValueError, match="aug_mode='twice'"):
        AugmentedReplay(exemplars, 12, mode="twice")


# ---------------------------------------------------------------------------------------------- the head
def test_the_mlp_head_is_maps_and_only_its_last_layer_grows():
    torch.manual_seed(0)
    head = IncrementalClassifier(8, head="mlp")
    assert [type(m).__name__ for m in head.trunk] == ["Linear", "LayerNorm", "GELU"]
    assert head.trunk[0].weight.shape == (16, 8) and head.dim == 16
    assert torch.equal(head.trunk[1].weight, torch.ones(16)) and not head.trunk[0].bias.any()
    head.add_classes(3)
    trunk = head.trunk[0].weight.clone()
    head.add_classes(2)
    assert head.weight.shape == (5, 16) and torch.equal(head.trunk[0].weight, trunk)
    assert head(torch.randn(4, 8)).shape == (4, 5) and head(torch.randn(2, 7, 8)).shape == (2, 7, 5)
    linear = IncrementalClassifier(8, 3)
    assert linear.dim == 8 and not hasattr(linear, "trunk")
    with pytest.raises(ValueError, match="head='deep'"):
        IncrementalClassifier(8, head="deep")


def test_an_mlp_head_trains_is_checkpointed_and_resumes(demo_root, tmp_path):
    cfg = demo_config(demo_root, tmp_path, "finetune", head="mlp", stop_after_phase=0)
    assert "head=mlp" in cfg["exp_name"]
    with one_thread():
        run_dir = run_experiment(cfg)
        state = torch.load(run_dir / "checkpoints" / "phase_0.pt", weights_only=False)
        assert {"classifier.trunk.0.weight", "classifier.trunk.1.weight"} <= set(state["trainable"])
        run_experiment({**cfg, "stop_after_phase": -1})
    assert json.loads((run_dir / "results.json").read_text())["finished"]


# ---------------------------------------------------------------------------------------------- CIM as CIM-CIL runs it
def test_cim_fills_as_cim_cils_loop_and_reads_the_closest_cam_by_default():
    cfg = resolve("demo", "cim")
    assert cfg["memory_fill"] == "stop" and cfg["cim_cam"] == "token"
    assert cfg["cim_bbxblur_prob_incre"] == 0.1 and cfg["cim_bbxblur_interval"] == 0.2
    assert resolve("demo", "emm")["memory_fill"] == "skip"
    assert resolve("demo", "cim", memory_fill="skip")["memory_fill"] == "skip"


@pytest.mark.parametrize("size, ratio", [((53, 70), 4.0), ((64, 96), 4.0), ((37, 41), 2.0)])
def test_bbx_blur_is_cim_cils_transform(size, ratio):
    """``utils/transform.py::BbxBlur``: the whole image NEAREST-resized to int(side / sqrt(ratio)) and back, the box
    pasted back at full resolution."""
    h, w = size
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pil = Image.fromarray(pixels)
    box = (10, 30, 12, 40)  # y0, y1, x0, x1
    small = (int(w / math.sqrt(ratio)), int(h / math.sqrt(ratio)))
    expected = pil.resize(small, Image.NEAREST).resize((w, h), Image.NEAREST)
    expected.paste(pil.crop((box[2], box[0], box[3], box[1])), (box[2], box[0], box[3], box[1]))
    image = torch.from_numpy(pixels).permute(2, 0, 1)
    assert torch.equal(bbx_blur(image, box, ratio), torch.from_numpy(np.array(expected)).permute(2, 0, 1))
    normalised = normalize_uint8(image)                                     # any dtype: the same pixels picked
    assert torch.equal(bbx_blur(normalised, box, ratio), normalize_uint8(bbx_blur(image, box, ratio)))
    assert torch.equal(bbx_blur(image, None, ratio), torch.from_numpy(np.array(
        pil.resize(small, Image.NEAREST).resize((w, h), Image.NEAREST))).permute(2, 0, 1))


def test_the_blur_probability_rises_as_cim_cils_schedule():
    """CIM-CIL: boxes recomputed at every 40th of 200 epochs but the first and last, probability (epoch // 40) x
    0.1; here every 0.2 of the phase's epochs."""
    cim = CIM(settings(resolve("demo", "cim")))
    assert {e: cim.blur_schedule(e, 20) for e in range(20) if cim.blur_schedule(e, 20) is not None} == \
        {4: 0.1, 8: 0.2, 12: pytest.approx(0.3), 16: 0.4}
    assert {e: cim.blur_schedule(e, 200) for e in range(200) if cim.blur_schedule(e, 200) is not None} == \
        {40: 0.1, 80: 0.2, 120: pytest.approx(0.3), 160: 0.4}
    assert all(cim.blur_schedule(e, 1) is None for e in range(1))
    off = CIM(settings(resolve("demo", "cim"), cim_bbxblur_prob_incre=0.0))
    assert all(off.blur_schedule(e, 20) is None for e in range(20))


def test_only_the_new_classes_drawn_images_are_blurred_within_their_own_pixels():
    cim = CIM(settings(resolve("demo", "cim")))
    cim._ctx = type("Ctx", (), {"new_classes": [2, 3]})()
    cim._boxes = {10: (0, 16, 0, 16), 11: (16, 32, 16, 48), 12: None}
    cim._blurred = {10, 12, 7}
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 64, 80, generator=g)
    pixel_masks = torch.zeros(4, 64, 80, dtype=torch.bool)
    pixel_masks[:, :48, :64] = True
    pixel_masks[0] = True
    images[~pixel_masks[:, None].expand_as(images)] = 0
    batch = {"images": images, "pixel_masks": pixel_masks, "indices": torch.tensor([10, 11, 12, 7]),
             "labels": torch.tensor([2, 3, 2, 0])}
    out = cim.blur_batch(batch)["images"]
    assert torch.equal(out[0], bbx_blur(images[0], (0, 16, 0, 16), 4.0))      # drawn, new class: blurred
    assert torch.equal(out[1], images[1])                                     # not drawn
    assert torch.equal(out[2, :, :48, :64], bbx_blur(images[2, :, :48, :64], None, 4.0))
    assert not out[2, :, 48:].any() and not out[2, :, :, 64:].any()           # the padding stays padding
    assert torch.equal(out[3], images[3])                                     # an old class's replayed exemplar
    assert torch.equal(batch["images"], images)                               # the batch itself is untouched


def test_the_cam_reads_the_classifier_at_every_patch_with_either_head(tiny_cfg):
    torch.manual_seed(0)
    model = ViLT(dict(tiny_cfg)).eval()
    ids, masks, images, pixel_masks = make_batch(B=2, H=64, W=80)
    batch = {"text_ids": ids, "text_masks": masks, "images": images, "pixel_masks": pixel_masks,
             "labels": torch.tensor([0, 2])}
    for head in ("linear", "mlp"):
        classifier = IncrementalClassifier(32, 3, head=head)
        out = cam_step(model, batch, classifier, 0.6, (4, 5))
        full = model(ids, masks, images, pixel_masks)
        tokens = model.pooler.activation(model.pooler.dense(full.hidden[:, full.text_len + 1:]))
        logit = classifier(tokens)[torch.arange(2), :, batch["labels"]]          # (B, P)
        expected = normalise(logit, torch.ones_like(logit, dtype=torch.bool), "minmax").reshape(2, 4, 5)
        assert torch.allclose(out["cam"], expected, atol=1e-5), head
        assert box_bounds(out["patch_keep"], 16)[0] is not None


def test_cim_blurs_new_class_images_during_training(demo_root, tmp_path, monkeypatch):
    """A cim phase of 3 epochs with the interval at a third: the boxes are made at epoch 1 (not 0, not the last),
    and with a step of 1.0 every new-class image of epochs 1 and 2 is blurred (the probability stays until the next
    update, as in CIM-CIL); epoch 0's never, replayed exemplars never."""
    seen = []
    blur = CIM.blur_batch

    def spy(self, batch):
        out = blur(self, batch)
        changed = (out["images"] != batch["images"]).flatten(1).any(1).tolist()
        drawn = [r in self._blurred for r in batch["indices"].tolist()]
        seen.append((self._ctx.phase, changed, drawn, batch["labels"].tolist(), list(self._ctx.new_classes)))
        return out

    monkeypatch.setattr(CIM, "blur_batch", spy)
    box_inputs = []

    def cam_spy(backbone, batch, *args, **kwargs):  # the box pass sees the model's input, as every pass does
        box_inputs.append((batch["images"].dtype, float(batch["images"].min()), float(batch["images"].max())))
        return cam_step(backbone, batch, *args, **kwargs)

    monkeypatch.setattr(cim_module, "cam_step", cam_spy)
    cfg = demo_config(demo_root, tmp_path, "cim", max_epoch=3, cim_bbxblur_interval=0.34, cim_bbxblur_prob_incre=1.0)
    with one_thread():
        run_experiment(cfg)
    assert box_inputs and all(dtype == torch.float32 and -1 <= lo and hi <= 1 for dtype, lo, hi in box_inputs)
    assert {phase for phase, *_ in seen} == {0, 1} and len(seen) == 8      # 2 phases x epochs 1, 2 x 2 steps
    for phase, changed, drawn, labels, new in seen:
        assert [d and y in new for d, y in zip(drawn, labels)] == [y in new for y in labels], phase
        assert not any(c and y not in new for c, y in zip(changed, labels)), phase   # (a box of the whole image
    assert any(c for _, changed, *_ in seen for c in changed)                        # changes nothing)


# ---------------------------------------------------------------------------------------------- older runs
def made_before(run_dir, **saved_values):
    """Make ``run_dir``'s config.json look like one an older version saved: issue 22's keys absent, the memory unit
    by its old name."""
    path = run_dir / "config.json"
    saved = json.loads(path.read_text())
    for key in ("head", "masked_replay", "aug_mode", "mask_cls_token", "cim_bbxblur_prob_incre",
                "cim_bbxblur_interval"):
        saved.pop(key, None)
    saved.update(memory_unit="exemplar", **saved_values)
    path.write_text(json.dumps(saved))


def test_a_run_with_memory_made_before_the_token_unit_is_refused_with_the_reason(demo_root, tmp_path):
    cfg = demo_config(demo_root, tmp_path, "replay", stop_after_phase=0)
    with one_thread():
        run_dir = run_experiment(cfg)
        made_before(run_dir)
        with pytest.raises(ConfigMismatchError) as err:
            run_experiment({**cfg, "stop_after_phase": -1})
    message = str(err.value)
    assert "memory_unit: 'exemplar' (saved) != 'tokens' (now)" in message
    assert "before memory_unit's default became 'tokens'" in message and "'byte_share'" in message
    assert "restart=True" in message


def test_a_run_whose_config_lacks_keys_added_later_resumes_at_their_defaults(demo_root, tmp_path):
    cfg = demo_config(demo_root, tmp_path, "finetune", stop_after_phase=0)
    with one_thread():
        run_dir = run_experiment(cfg)
        made_before(run_dir)
        assert run_experiment({**cfg, "stop_after_phase": -1}) == run_dir
    assert json.loads((run_dir / "results.json").read_text())["finished"]
