"""The replay toolbox the memory methods build on: exemplar kinds and their cost (``exemplar``), the memory buffer
under a budget (``buffer``), exemplar masking (``masking``), ranking (``selection``, ``herding``), replay with the
multimodal augmentation (``augment``), the paper's Fig. 4 drawing (``figure``) and what each phase saves for the memory
browser (``snapshot``). Nothing here knows the phase loop or the method registry."""
