"""What the files layer asks of the layers above it, as protocols: fs/ implements them,
so nothing here imports pyfuse3 or fs/."""
from __future__ import annotations

from typing import Protocol


class KernelPort(Protocol):
    """What the writer asks of the kernel (fs/kernel.py); each a no-op while unmounted."""

    def invalidate_later(self, ino: int) -> None:
        """Drop the inode's attributes and pages soon (from any handler)."""

    async def drop_pages(self, ino: int) -> None:
        """Drop them now (from FLUSH and FSYNC only)."""

    def invalidate_entry(self, parent: int, name: bytes) -> None:
        """Forget a name."""

    def drop(self, ino: int) -> None:
        """Forget the kernel's references to an inode that is gone without a forget."""
