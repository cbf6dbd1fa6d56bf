"""Data: prompt sets, edit requests, the LocoWorld generator and datamodules."""
