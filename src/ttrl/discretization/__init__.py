"""discretization stage."""
