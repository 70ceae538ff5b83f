"""The competing methods of the accuracy benchmark (``bench/accuracy.py``), built on our own backbone.

Why our own: no alternative's weights can be downloaded here, and a fair comparison needs the same
backbone, the same data and the same training budget for every method. Modules (one job each):

* :mod:`.prompts` — point and box prompts drawn from a truth mask (the "user click");
* :mod:`.prompted_sam` — SAM with its own prompt encoder taking a point or a box (MedSA/MedSAM-style);
* :mod:`.prompt_free` — SAMed-style: one output mask per fixed structure, no prompt;
* :mod:`.persam` — PerSAM-style one-shot prompting, training-free on the point-prompt model;
* :mod:`.train_baseline` — the training loop for these models, on the KSAM trainer's pieces;
* :mod:`.slicewise` — running a 2D model over a volume slice by slice on the engine's slice sources;
* :mod:`.atlas2d` — 2D atlas registration for colour fundus images (the 3D one is ``bench/atlas_registration``);
* :mod:`.unet_adapter` — the fixed-task U-Net of ``bench/unet_baseline`` on the same model-size slices.
"""
