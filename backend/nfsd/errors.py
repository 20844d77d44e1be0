"""User-facing errors. Each message says what was wrong and what to do about it.

The CLI prints ``str(error)`` on one line and exits non-zero; the server turns them into 4xx
responses (at submission) or a failed job with this message (while running).
"""


class NfsdError(Exception):
    """Base class for errors caused by input or environment, not by a bug."""


class MeshError(NfsdError, ValueError):
    """A mesh that cannot be used (unreadable, empty, NaN, indices out of range...)."""


class ConfigError(NfsdError, ValueError):
    """A setting out of range, an unknown mode, a prompt that is empty or too long."""


class ModelError(NfsdError):
    """A model that cannot be found or loaded; says where it looked and how to provide weights."""


class OutOfMemory(NfsdError):
    """The GPU ran out of memory; the message names the setting to lower."""


class RendererError(NfsdError):
    """The requested renderer is not available (e.g. nvdiffrast forced without CUDA)."""


class Cancelled(NfsdError):
    """The user cancelled while the job was still being prepared (e.g. unwrapping), before any result existed."""
