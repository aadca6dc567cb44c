"""The replay toolbox the memory methods build on: exemplar kinds and their cost (``exemplar``), the memory buffer
under a budget (``buffer``), exemplar masking (``masking``), ranking (``selection``, ``herding``), replay with the
multimodal augmentation (``augment``) and the paper's Fig. 4 drawing (``figure``). Nothing here knows the phase loop
or the method registry."""
