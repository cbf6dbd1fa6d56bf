"""Training the embedded world's models from scratch: the text-to-image model and WorldCLIP."""
