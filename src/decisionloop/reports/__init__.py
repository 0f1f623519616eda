"""Reports over the whole loop: what rules and models decided, what cases made of it, drift."""
