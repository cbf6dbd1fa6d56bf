"""Localization: window builders, the window-grid job and (later) LocoGen scoring."""
