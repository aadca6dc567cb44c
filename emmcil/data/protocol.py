"""The phases of a class-incremental protocol (:mod:`emmcil.settings.protocol`, where the config checks them)."""
from emmcil.settings.protocol import phase_sizes, protocol_label

__all__ = ["phase_sizes", "protocol_label"]
