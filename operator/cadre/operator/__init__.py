"""The operator: thin kopf handlers over pure ``build_*`` functions (the builders come first)."""
