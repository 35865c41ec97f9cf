"""Bus drivers: Modbus RTU/TCP and the call-panel serial line."""
