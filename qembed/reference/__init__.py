"""The reference engine: the model card's recipe (engine) and its HTTP server (server, `serve --profile cpu`)."""
