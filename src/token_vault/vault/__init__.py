"""The vault: validation, encryption and storage put together."""
