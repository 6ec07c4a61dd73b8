"""The node: a process kubelet that runs pods as local processes, their filesystems and the
images it knows."""
