"""Tools over runs and losses: analyses, renders, task pictures."""
