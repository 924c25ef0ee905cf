"""One part from frame to verdict (Inspector), and the threads that join the stages (Engine)."""
