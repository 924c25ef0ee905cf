"""From frame to model input: undistort, find the part, align it, preprocess; image quality."""
