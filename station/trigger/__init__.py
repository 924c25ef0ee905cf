"""What starts an inspection: a part crossing a line, a sensor on the serial link, a button, the camera."""
