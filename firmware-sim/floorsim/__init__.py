"""floorsim: the reference floor hardware, simulated."""
