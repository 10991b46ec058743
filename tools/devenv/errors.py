"""The errors of the dev tooling: one base class, so callers catch one thing."""

from __future__ import annotations


class ControlPlaneError(RuntimeError):
    """Any failure to build, start, reach or stop the local control plane."""


class PortInUseError(ControlPlaneError):
    """A port the control plane needs is taken."""


class NodeUnavailableError(ControlPlaneError):
    """This host cannot run the local node now (the message says why)."""


class NodeBusyError(NodeUnavailableError):
    """Another local node runs on this machine (only one can)."""
