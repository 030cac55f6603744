"""edge-agent: streaming anomaly detection for industrial sensor gateways.

The gateway side: points in (MQTT, serial, files), a three-stage cascade (statistical
gate -> River -> ONNX autoencoder), alerts and stats out. This package never imports
torch; models arrive as ONNX files built by the ``export`` package.
"""

from agent._version import __version__
from agent.config import AgentConfig, ConfigError, load_config
from agent.engine import Engine
from agent.types import Alert, AlertEvent, Decision, Point, Severity, Stage

__all__ = [
    "AgentConfig",
    "Alert",
    "AlertEvent",
    "ConfigError",
    "Decision",
    "Engine",
    "Point",
    "Severity",
    "Stage",
    "__version__",
    "load_config",
]
