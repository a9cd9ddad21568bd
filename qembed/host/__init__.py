"""The local machine: /proc, process groups, ports, log files and rotation, state records, verdict cache."""
