"""Reading attention: headscope's attention function, the hooks fallback, word pooling and top-k links."""
