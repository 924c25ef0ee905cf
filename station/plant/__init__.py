"""The station on the plant's network: results, status and alarms on MQTT (``mqtt``,
``outbox``, ``payloads``), the PLC interface and the fleet model (other modules).

Qt-free: headless runs and the window both use it.
"""
