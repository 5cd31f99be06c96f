"""tcplab controller: runs scenarios against the probes and writes the trace and the film."""
