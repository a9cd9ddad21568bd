"""The serving runtime: profiles, GPU and CPU findings, SGLang argv, launch, readiness, the supervisor, the gateway."""
