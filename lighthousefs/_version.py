"""The version, in a leaf module: views and the CLI read it without importing the
package's public surface (lighthousefs/__init__.py), which sits above every layer."""

__version__ = "0.1.0"
