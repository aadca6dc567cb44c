"""The method contract: what a class-incremental method may change in the phase loop (Mammoth / Avalanche style).

The driver (:mod:`emmcil.engine.driver`) runs, for each phase t::

    method.before_phase(ctx)
    train on  scenario.train_dataset(t, extra=method.replay_dataset(ctx))   with loss method.training_loss
                                                (method.on_train_epoch_start at each epoch's start)
    method.after_training(ctx)                  # e.g. a prototype classifier (EASE)
    evaluate on the test data of every class seen so far (predictions: method.logits)
    method.after_phase(ctx)                     # e.g. fill the memory buffer
    checkpoint (method.state_dict() included)

A method is one file in ``emmcil/methods/`` with a ``@register``-ed subclass of :class:`Method`; its ``name`` is
what ``method=...`` (or a named config of ``config.py``) selects. Keys of its own are the fields of its settings
dataclass (``settings = XSettings``, a frozen :class:`~emmcil.settings.MethodSettings` declared in the same file);
they join the sacred config, so they show in ``print_config`` and can be set on the command line. A method is built
from the run's typed settings alone (``XMethod(settings)``): ``self.settings`` the run's, ``self.own`` its own keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from emmcil.data.scenario import phase_boundaries
from emmcil.settings import MethodSettings, Settings, defaults


@dataclass
class PhaseContext:
    """What a method sees of the run during phase ``phase``.

    scenario: the class-incremental split of the data, training transform (``emmcil.data.scenario``);
    eval_scenario: the same split with the evaluation transform (no augmentation), for herding or masking;
    module: the :class:`~emmcil.engine.module.IncrementalModule` (backbone, ``classifier``);
    predict(dataset, features=False, step=None) -> dict of per-sample tensors in dataset order: ``labels``,
    ``indices`` (dataset rows), ``preds``, and ``features`` (N, C) pooled f(x) when asked; or, with
    ``step(backbone, batch) -> dict`` of per-sample tensors of fixed shapes, what ``step`` returns (plus labels
    and indices). Runs under the phase's Trainer (devices, precision), model in eval mode, no gradients;
    full_exemplar_bytes(): the training set's mean full-exemplar cost in bytes (computed once, cached in the run
    directory; the size of one full exemplar under ``memory_unit="bytes"``);
    tokenizer: the run's bert-base-uncased tokenizer; is_main: False on the non-zero ranks of a multi-process
    run, and when re-evaluating a finished run (``python -m emmcil.engine.evaluate``): then no file may be written.
    """

    settings: Settings  # the run's typed settings (``ctx.settings.model.image_size``)
    phase: int
    scenario: Any
    eval_scenario: Any
    module: Any
    run_dir: Path
    predict: Callable[..., dict[str, torch.Tensor]]
    full_exemplar_bytes: Callable[[], float]
    tokenizer: Any = None
    is_main: bool = True

    @property
    def num_phases(self) -> int:
        return self.scenario.num_phases

    @property
    def new_classes(self) -> list[int]:
        """Remapped ids of the classes phase ``phase`` introduces."""
        return self.scenario.phase_classes(self.phase)

    @property
    def seen_classes(self) -> list[int]:
        """Remapped ids of every class seen up to and including this phase."""
        return self.scenario.classes_upto(self.phase)

    @property
    def patch_size(self) -> int:
        return int(self.settings.model.patch_size)

    @property
    def max_text_len(self) -> int:
        return int(self.settings.data.max_text_len)


class Method:
    """Base class: plain fine-tuning on each phase's data, cross-entropy over the seen classes, no memory.

    Subclasses override the hooks they need; every hook has a working default.
    """

    name: ClassVar[str] = ""
    uses_memory: ClassVar[bool] = False   # keeps exemplars (exp_name then shows memory_per_class)
    settings: ClassVar[type[MethodSettings]] = MethodSettings  # its own keys: fields, defaults, docs, checks
    config: ClassVar[dict[str, Any]] = {}  # the method's own config keys -> defaults (from ``settings``)
    named_config: ClassVar[dict[str, Any]] = {}  # other keys its named config sets (e.g. {"tuning": "frozen"})

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.config = defaults(cls.settings)

    def __init__(self, settings: Settings):
        """``settings``: the run's typed settings (built once at its start, :func:`emmcil.engine.driver.run_settings`),
        kept as ``self.settings``; ``settings.method``, the method's own keys, must be an instance of its ``settings``
        class (TypeError otherwise) and is kept as ``self.own``; ValueError for a bad value of its keys
        (:meth:`check_config`)."""
        own = getattr(settings, "method", None)
        if not isinstance(own, type(self).settings):
            raise TypeError(f"method {type(self).name or type(self).__name__!r} takes the run's Settings whose "
                            f"`method` is a {type(self).settings.__name__}, not {type(own).__name__} (build them "
                            f"for this method: emmcil.methods.settings_of(config))")
        self.settings = settings
        self.own = own
        self.check_config()

    # -- which phase: what ``encode``, ``logits`` and ``training_loss`` see of it, from the classifier's size
    def phase_boundaries(self) -> list[int]:
        """[0, n_0, n_0 + n_1, ..., num_classes]: phase t owns the remapped classes [b[t], b[t + 1])."""
        e = self.settings.experiment
        return phase_boundaries(int(self.settings.data.num_classes), int(e.num_phases), int(e.init_classes),
                                int(e.increment))

    def current_phase(self, module) -> int:
        """The phase whose classes the classifier has just grown by (0 before any), read off the classifier's size,
        so it holds in every hook and after a resume. Raises RuntimeError for a size that is not a phase boundary."""
        n, bounds = module.classifier.num_classes, self.phase_boundaries()
        if n == 0:
            return 0
        if n not in bounds:
            raise RuntimeError(f"classifier has {n} classes, not a phase boundary of {bounds}")
        return bounds.index(n) - 1

    def known_classes(self, module) -> int:
        """Classes of the phases before the current one."""
        return self.phase_boundaries()[self.current_phase(module)]

    def build_net(self, backbone_cfg) -> torch.nn.Module | None:
        """The method's own parameters (prompts, adapters, ...) as a module, or None. Called once, when the
        Lightning module is built; it becomes ``module.method_net``, is tuned under every tuning mode but "full"
        alike, and is saved in every phase checkpoint. Allocate it whole (e.g. every task's prompts) so that a
        checkpoint of any phase fits it."""
        return None

    def set_trainable(self, module) -> None:
        """After the freeze policy: adjust ``requires_grad`` (e.g. freeze earlier tasks' prompts). Frozen
        method parameters are still checkpointed."""

    def encode(self, module, batch: dict, return_attention=False):
        """The backbone's ``ViLTOutput`` for a batch. Override to add prompts (``extra_tokens``, ``prefixes``)
        or adapters (``adapters``) through :meth:`emmcil.model.ViLT.forward`'s hooks."""
        return module.backbone(batch["text_ids"], batch["text_masks"], batch["images"], batch["pixel_masks"],
                               patch_keep=batch.get("patch_keep"), return_attention=return_attention)

    def check_config(self) -> None:
        """ValueError naming the first bad value of the method's keys (its settings' :meth:`MethodSettings.check`
        against the run's settings). The config's resolution runs the same check (:meth:`Settings.problems`, so
        ``print_config`` and the scripts' dry runs refuse the value); the constructor calls this for settings built
        elsewhere (a library caller's), so that a key read only after a phase has trained does not cost that phase."""
        problems = self.own.check(self.settings)
        if problems:
            raise ValueError(problems[0])

    def setup(self, ctx: PhaseContext) -> None:
        """Once per process, before the first phase it runs (also when resuming, before ``load_state_dict``)."""

    def before_phase(self, ctx: PhaseContext) -> None:
        """At the start of phase ``ctx.phase``, after the classifier has grown by the new classes."""

    def on_train_epoch_start(self, module, epoch: int) -> None:
        """At the start of every training epoch of the phase (``epoch`` from 0), inside the Trainer's fit (e.g.
        CIM's box updates); ``module.training`` is True. No Trainer call may be nested here."""

    def replay_dataset(self, ctx: PhaseContext) -> Dataset | None:
        """Extra training data for this phase (items in the dataset format, remapped labels, optional
        ``patch_keep``), or None."""
        return None

    def logits(self, module, output) -> torch.Tensor:
        """Logits (B, num_seen_classes) of an encoded batch (``output``: what :meth:`encode` returned), in training
        and evaluation alike. Override for another head (e.g. EASE's prototype classifier over several subspaces,
        or masking old classes' logits in training)."""
        return module.classifier(output.pooled)

    def training_loss(self, module, batch: dict, output, logits: torch.Tensor) -> torch.Tensor:
        """Loss of one training batch. output: the backbone's ``ViLTOutput``; logits (B, num_seen_classes)."""
        return F.cross_entropy(logits, batch["labels"])

    def after_training(self, ctx: PhaseContext) -> None:
        """After training, before the evaluation of phase ``ctx.phase`` (e.g. build a prototype classifier with
        ``ctx.predict``)."""

    def after_phase(self, ctx: PhaseContext) -> None:
        """After training and evaluation of phase ``ctx.phase`` (e.g. update the memory buffer)."""

    def memory_report(self) -> dict | None:
        """JSON-able summary of what the method stores (exemplars, bytes), or None without memory."""
        return None

    def state_dict(self) -> dict:
        """Everything the next phase needs besides the model weights (saved in the phase checkpoint)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
