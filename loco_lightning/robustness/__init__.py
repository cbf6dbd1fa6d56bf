"""Robustness of edits: recovery attacks as data and the job that writes the robustness card."""
