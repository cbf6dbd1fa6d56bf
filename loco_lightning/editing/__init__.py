"""Editing: the closed-form ridge update (pure tensors), edit requests, apply/undo/save, modules."""
