"""Face preparation for Stand-In, in numpy/OpenCV (never imports ComfyUI).

  * :mod:`.prepare`: the official reference preprocessing (largest face, 1.5x square crop, 512x512, white background);
  * :mod:`.masks`: per-frame face masks for face-swap graphs;
  * :mod:`.models`: facexlib's detector and parser, loaded offline from a weights folder, behind small adapters;
  * :mod:`.swap`: the official face swap's paste (landmark warp or window paste) and its masks;
  * :mod:`.identity`: the identity score (FaceSim protocol, dlib or ArcFace) and the reference picker;
  * :mod:`.images` and :mod:`.video`: reading a photo or a video file outside ComfyUI (the scripts, the score CLI).
"""
