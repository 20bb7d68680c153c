"""Super-resolution for print versions: Real-ESRGAN's networks written here with its state-dict
names (``archs``), their weights read from safetensors only (``weights``), and inference in
overlapping tiles (``tiling``)."""
