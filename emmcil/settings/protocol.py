"""The phases of a class-incremental protocol: equal phases (``num_phases``) or PyCIL's ``init_classes`` /
``increment``. Torch-free: the settings check a protocol when the config is resolved."""
from __future__ import annotations


def phase_sizes(num_classes: int, num_phases: int | None, init_classes: int = 0, increment: int = 0) -> list[int]:
    """Classes per phase.

    ``increment == 0``: ``num_phases`` equal phases; when the division is not exact the first
    ``num_classes % num_phases`` get one class more (101 classes, 10 phases: 11 + 9 * 10).
    ``increment > 0``: PyCIL's protocol (``utils/data_manager.py``, ``DataManager._increments``; its ``init_cls`` and
    ``increment``): a first phase of ``init_classes`` classes (0: ``increment``, PyCIL's "B0"), then phases of
    ``increment`` while they leave classes over, and what is left (1 to ``increment``) as the last: 10 classes,
    4 / 2 give [4, 2, 2, 2] (B4-Inc2), 100 classes, 50 / 10 give [50, 10, 10, 10, 10, 10] (B50-Inc10).
    ``num_phases`` is then what the protocol gives; None derives it, another value is a ValueError.

    Raises ValueError for a split without a class in some phase, or that does not fit ``num_classes``."""
    if init_classes < 0 or increment < 0:
        raise ValueError(f"init_classes and increment must be >= 0, got {init_classes} and {increment}")
    if increment == 0:
        if init_classes:
            raise ValueError(f"init_classes={init_classes} needs increment > 0 (the classes of every later phase, "
                             f"PyCIL's increment); without increment the {num_classes} classes are split into "
                             f"num_phases equal phases")
        if num_phases is None or not 1 <= num_phases <= num_classes:
            raise ValueError(f"num_phases must lie in [1, {num_classes}], got {num_phases}")
        base, extra = divmod(num_classes, num_phases)
        return [base + (t < extra) for t in range(num_phases)]
    first = init_classes or increment
    if first > num_classes:
        raise ValueError(f"init_classes={first} (the first phase) exceeds the dataset's {num_classes} classes")
    sizes = [first]
    while sum(sizes) + increment < num_classes:  # PyCIL: while sum(increments) + increment < len(class_order)
        sizes.append(increment)
    if num_classes > sum(sizes):
        sizes.append(num_classes - sum(sizes))
    if num_phases is not None and num_phases != len(sizes):
        label = protocol_label(len(sizes), init_classes, increment)
        raise ValueError(f"num_phases={num_phases} disagrees with {label} "
                         f"(init_classes={init_classes}, increment={increment}), which cuts the {num_classes} classes "
                         f"into {len(sizes)} phases of {sizes}: leave num_phases out (and any phases_* named "
                         f"config), it follows from the two")
    return sizes


def protocol_label(num_phases: int, init_classes: int = 0, increment: int = 0) -> str:
    """How tables and run names call a protocol: ``L=5`` for equal phases, ``B{init}-Inc{increment}`` for PyCIL's
    (``B0`` when the first phase is an increment like the others, as PyCIL's papers write B0-Inc10)."""
    if not increment:
        return f"L={num_phases}"
    return f"B{0 if init_classes in (0, increment) else init_classes}-Inc{increment}"
