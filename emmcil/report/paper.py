"""The paper's published numbers, and how its rows are named: the main table (MM-ImageNet-R, L = 5, 10, 20) and the
memory-size plot (MM-ImageNet-R, L = 10), as docs/reproduction.md ("The paper's numbers") lists them."""
from __future__ import annotations

# Our method names -> the rows of the paper's table. finetune / joint are our lower / upper bounds (no paper row).
PAPER_NAMES = {
    "l2p": "L2P", "dualprompt": "DualPrompt", "ease": "EASE", "replay": "SSF", "mrdc": "SSF + MRDC",
    "cim": "SSF + CIM", "emm": "SSF + Ours",
}
# The tables' row order: the paper's, between our lower and upper bounds.
METHOD_ORDER = ["finetune", "l2p", "dualprompt", "ease", "replay", "mrdc", "cim", "emm", "joint"]

# "Comparisons with SOTA CIL methods on MM-ImageNet-R", the project page's table (exact numbers; metric not stated):
# dataset -> method -> L -> accuracy (%).
PAPER_TABLE: dict[str, dict[str, dict[int, float]]] = {
    "mm_imagenet_r": {
        "l2p": {5: 68.17, 10: 69.21, 20: 66.23},
        "dualprompt": {5: 77.66, 10: 75.57, 20: 70.47},
        "ease": {5: 78.06, 10: 76.84, 20: 73.91},
        "replay": {5: 80.58, 10: 77.03, 20: 75.26},
        "mrdc": {5: 80.77, 10: 78.66, 20: 76.13},
        "cim": {5: 80.97, 10: 78.21, 20: 77.23},
        "emm": {5: 82.76, 10: 80.55, 20: 78.64},
    },
}
PAPER_TABLE_SOURCE = ("the paper's project page, \"Comparisons with SOTA CIL methods on MM-ImageNet-R\" "
                      "(static/fig/ex_quantitative.png)")

# "Ablation study on memory buffer size" (MM-ImageNet-R, L = 10), digitised from the plot's pixels (±0.1 pt):
# (dataset, L) -> method -> memory size (samples/class) -> (exemplars per class, accuracy %).
PAPER_MEMORY: dict[tuple[str, int], dict[str, dict[int, tuple[float, float]]]] = {
    ("mm_imagenet_r", 10): {
        "replay": {1: (1, 74.8), 3: (3, 76.2), 5: (5, 77.0), 7: (7, 78.1), 10: (10, 79.1)},
        "cim": {1: (2, 74.5), 3: (6, 77.2), 5: (10, 78.2), 7: (14, 79.2), 10: (19, 80.2)},
        "emm": {1: (3, 76.6), 3: (8, 79.2), 5: (14, 80.6), 7: (19, 81.2), 10: (28, 82.1)},
    },
}
PAPER_MEMORY_SOURCE = "the paper's memory plot (static/fig/compare_mem.png), digitised to about ±0.1 pt"


def method_rank(method: str) -> int:
    """The method's row in the tables (:data:`METHOD_ORDER`); methods the paper does not have come last."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
