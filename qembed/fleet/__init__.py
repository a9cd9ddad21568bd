"""Fleet tools over running servers: verify, doctor, top, bench and deploy."""
