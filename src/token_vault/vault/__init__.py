"""The vault: validation, encryption and storage put together; the only door to storage.

``core`` (:class:`TokenVault`), ``entry`` (what it hands back), ``refresh`` (the refresh
flow's shapes), ``sealer`` (rows sealed and opened), ``rotation`` (key rotation),
``schema`` (migrations), ``validation`` (input checks).
"""
