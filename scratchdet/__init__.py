"""scratchdet: face detection from scratch, the YOLO (v1) way.

Symbol legend, used in shape comments throughout the package:
    N  images in a batch            M  boxes (faces) in one image
    S  grid cells per side          B  boxes predicted per cell
    H, W  image height and width in pixels
Boxes are ``Tensor[M, 4]`` in xyxy pixel coordinates unless a docstring says
otherwise; image sizes are ``(height, width)``. The network output is
``Tensor[N, S, S, B*5]``: for each predictor ``(x, y, sqrt_w, sqrt_h, conf)``,
x and y relative to the cell, w and h relative to the image.
"""

__version__ = "0.1.0"
