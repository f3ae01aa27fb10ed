"""Training-scale planning: FLOP conventions, activation memory, parallel layouts, hardware fit and time.

* :mod:`.hardware`     the GPU catalogue (data, one source per entry);
* :mod:`.conventions`  FLOPs per token / step under the published conventions, MFU under each;
* :mod:`.activations`  activation memory: measured as built (saved-tensor hooks) and Korthikanti et al. 2022;
* :mod:`.plan`         per-GPU memory of a parallel layout, fit, the layouts that fit, step time and time to train.

Importing this package is cheap (no torch); the measuring functions import it on first use.
"""
