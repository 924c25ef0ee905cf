"""The station on the plant's network: PLC handshake, results on MQTT, the fleet view's model.

Qt-free (the fleet *window* is ``station.ui.fleet``).
"""
