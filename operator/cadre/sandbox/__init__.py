"""The sandbox: a credential-free tool server that runs the model's commands.

Standard library only (a test enforces it), so ``python -m cadre.sandbox`` runs in any image
with python3. It holds no credential of any kind: not even its own bearer token, only the
token's SHA-256 digest.
"""
