"""Annotation-guided dataset construction (GMAI-VL-5.5M style).

Every text is grounded in a dataset's own labels: class names, masks (which
structures, where, how large, how many), boxes. Layout:

- `records`    the LLaVA/ShareGPT record and its traceable id
- `facts`      masks and boxes -> location, size, count
- `templates`  EN and ZH template banks for captions, perception and VQA
- `converters` classification (folder, CSV), 2D/3D segmentation, COCO detection
- `build`      parallel, sharded, resumable build with a manifest and a bad-file report
- `demo`       a procedural corpus of synthetic medical-looking images

Nothing here imports torch.
"""
