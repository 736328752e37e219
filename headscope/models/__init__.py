"""Models: loading by alias, Hugging Face id, folder, GGUF or nn.Module, and their architecture facts."""
