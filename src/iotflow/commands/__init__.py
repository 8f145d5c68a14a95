"""Commands to devices: stored, delivered over MQTT or picked up by HTTP polling, acknowledged."""
