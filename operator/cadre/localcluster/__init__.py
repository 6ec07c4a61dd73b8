"""The local cluster: a faithful in-process subset of Kubernetes for tests, the demo and
``cadre dev``. Production code (operator, harness, sandbox) never imports it."""
