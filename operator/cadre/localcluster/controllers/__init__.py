"""The controllers kube-controller-manager would run: garbage collection, namespaces, service
accounts and workloads (StatefulSets, PersistentVolumeClaims)."""
