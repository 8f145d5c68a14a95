"""IoTFlow: self-hosted IoT device connectivity platform."""

__version__ = "0.1.0"
