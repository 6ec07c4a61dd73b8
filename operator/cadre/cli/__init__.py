"""The ``cadre`` command line (also usable as the kubectl plugin ``kubectl-cadre``)."""
