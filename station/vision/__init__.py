"""From frame to model input: undistort, grey (``gray``), segment, find the part, align it, preprocess; image quality."""
