"""tcplab probe: one daemon per lab host (shaping, nc endpoints, socket states, packets)."""
