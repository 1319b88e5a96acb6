"""One module per artifact kind. Each is pure: (plan, secrets) -> bytes. No file or clock access."""
