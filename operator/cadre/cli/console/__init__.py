"""``cadre console``: a web console for an organization of agents, read entirely through the
Kubernetes API (watches of Agents, Teams and Tasks; the harnesses' event streams through the
API server's pod proxy), with no database of its own. See docs/console.md."""
