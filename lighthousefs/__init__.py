"""lighthousefs: the shared state of a multi-agent system as a filesystem, event-sourced."""

__version__ = "0.1.0"
